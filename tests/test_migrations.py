"""The Alembic migrations are the only way the schema is made, and they match the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app.migrate import downgrade, upgrade
from app.models import Base


def test_models_and_migrations_agree(db_url: str) -> None:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations differ: {diff}"


def test_downgrade_to_base_and_back(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/roundtrip.db"
    upgrade(url)
    downgrade(url, "base")
    engine = create_engine(url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(url)
    assert "concepts" in inspect(engine).get_table_names()
    engine.dispose()


def test_only_one_active_model_version_is_allowed(db_url: str) -> None:
    import pytest
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.orm import Session

    from app.models import ModelVersion

    engine = create_engine(db_url)
    with Session(engine) as session:
        session.add(ModelVersion(name="a", base_model="m", state="active"))
        session.commit()
        session.add(ModelVersion(name="b", base_model="m", state="candidate"))
        session.commit()
        session.add(ModelVersion(name="c", base_model="m", state="active"))
        with pytest.raises(IntegrityError):
            session.commit()
    engine.dispose()
