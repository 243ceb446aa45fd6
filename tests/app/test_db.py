"""The engine: errors never carry bound parameters; an unreachable database is one line."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.db import ensure_reachable, make_engine
from app.errors import DatabaseUnreachable
from tests.utils.server import free_port


def test_sql_errors_hide_bound_parameters(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn, pytest.raises(DBAPIError) as caught:
            conn.execute(
                text("SELECT id FROM users WHERE username = :name AND no_such_column = 1"),
                {"name": "token-hash-or-username-42"},
            )
    finally:
        engine.dispose()
    assert "token-hash-or-username-42" not in str(caught.value)


@pytest.mark.nodb
def test_an_unreachable_database_is_one_line_naming_its_variable() -> None:
    url = f"postgresql+psycopg://repic:db-pass-123@127.0.0.1:{free_port()}/repic"
    with pytest.raises(DatabaseUnreachable) as caught:
        ensure_reachable(url)
    message = str(caught.value)
    assert "\n" not in message and "REPIC_DATABASE__URL" in message
    assert "db-pass-123" not in message and "127.0.0.1" in message


def test_a_reachable_database_passes(db_url: str) -> None:
    ensure_reachable(db_url)
