"""Browser sessions as rows: a cookie id that only the database makes live, and ends."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from app.models import UserSession
from app.security import token_digest
from app.services.browser_sessions import BrowserSessions, Client, end_user_sessions
from tests.utils.clock import Clock
from tests.utils.users import user_row


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sessions(container: Any, clock: Clock) -> BrowserSessions:
    return BrowserSessions(container.session_factory, max_age_s=3600, clock=clock)


def test_only_the_digest_of_the_cookie_id_is_stored(container, sessions) -> None:
    user = user_row(container)
    with container.session_factory() as db:
        token = sessions.start(db, user, Client("10.0.0.1", "firefox"))
        stored = [row.token_hash for row in db.query(UserSession)]
    assert stored == [token_digest(token)] and token not in stored


def test_a_session_expires_after_its_max_age(container, sessions, clock) -> None:
    user = user_row(container)
    with container.session_factory() as db:
        token = sessions.start(db, user, Client())
        clock.advance(3599)
        assert sessions.user(db, token) is not None
        clock.advance(1)
        assert sessions.user(db, token) is None


def test_an_ended_session_is_no_longer_resolved(container, sessions) -> None:
    user = user_row(container)
    with container.session_factory() as db:
        token = sessions.start(db, user, Client())
        sessions.end(db, token)
        assert sessions.resolve(db, token) is None


def test_ending_a_users_sessions_leaves_other_users_alone(container, sessions) -> None:
    anya, boris = user_row(container, "anya"), user_row(container, "boris")
    with container.session_factory() as db:
        mine = [sessions.start(db, anya, Client()) for _ in range(2)]
        theirs = sessions.start(db, boris, Client())
        assert end_user_sessions(db, anya.id) == 2
        db.commit()
        assert [sessions.resolve(db, t) for t in mine] == [None, None]
        assert sessions.resolve(db, theirs) is not None


def test_last_seen_is_written_at_most_once_a_minute(container, sessions, clock) -> None:
    user = user_row(container)
    with container.session_factory() as db:
        token = sessions.start(db, user, Client())
        started = clock.now
        clock.advance(30)
        assert sessions.resolve(db, token).last_seen_at.replace(tzinfo=dt.UTC) == started
        clock.advance(31)
        assert sessions.resolve(db, token).last_seen_at.replace(tzinfo=dt.UTC) == clock.now


def test_flashes_are_shown_once(container, sessions) -> None:
    user = user_row(container)
    with container.session_factory() as db:
        token = sessions.start(db, user, Client())
    sessions.add_flash(token, "info", "Saved.")
    assert sessions.take_flashes(token) == [{"kind": "info", "message": "Saved."}]
    assert sessions.take_flashes(token) == []


def test_purge_deletes_ended_and_expired_sessions_only(container, sessions, clock) -> None:
    user = user_row(container)
    with container.session_factory() as db:
        ended = sessions.start(db, user, Client())
        sessions.end(db, ended)
        sessions.start(db, user, Client())
        clock.advance(1800)
        live = sessions.start(db, user, Client())
        clock.advance(1800)  # the second one is expired now, the third is not
    assert sessions.purge() == 2
    with container.session_factory() as db:
        assert [r.token_hash for r in db.query(UserSession)] == [token_digest(live)]
