"""Model column types: what reads back from the database is what was written."""

from __future__ import annotations

from app.models import User


def test_timestamps_read_back_time_zone_aware(container) -> None:
    with container.session_factory() as session:
        session.add(User(username="anya", password_hash="x"))
        session.commit()
    with container.session_factory() as session:
        user = session.query(User).one()
        assert user.created_at.utcoffset() is not None
        assert user.created_at.utcoffset().total_seconds() == 0
