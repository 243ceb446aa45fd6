"""Database engine and sessions (SQLAlchemy 2): SQLite embedded, PostgreSQL in production."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, Select, create_engine, event, func, select, text
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.errors import DatabaseUnreachable


def make_engine(url: str, echo: bool = False, pool_size: int = 10) -> Engine:
    """An engine for ``url``; SQLite gets foreign keys, WAL and a busy timeout.

    Bound parameters never appear in errors or in the ``echo`` log (``hide_parameters``):
    they are usernames, token digests and password hashes, and error messages end in logs.
    """
    kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": True, "hide_parameters": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs["pool_size"] = pool_size
        kwargs["max_overflow"] = pool_size
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            if ":memory:" not in url:
                cursor.execute("PRAGMA journal_mode=WAL")
                # WAL + NORMAL: durable against crashes of the app, one fsync per checkpoint.
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    return engine


def ensure_reachable(target: str | Engine) -> None:
    """Connect once, or raise :class:`DatabaseUnreachable` with one line that names the
    setting, the URL (password masked) and the driver's first line: what a process says
    at start instead of a driver traceback."""
    try:
        engine = make_engine(target) if isinstance(target, str) else target
    except ArgumentError as exc:  # unparsable, or an unknown dialect/driver
        raise DatabaseUnreachable(
            f"REPIC_DATABASE__URL is not a usable database URL: {exc}"
        ) from None
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (OperationalError, InterfaceError) as exc:
        lines = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
        raise DatabaseUnreachable(
            f"cannot reach the database of REPIC_DATABASE__URL "
            f"({engine.url.render_as_string(hide_password=True)}): "
            f"{lines[0] if lines else type(exc).__name__}"
        ) from None
    finally:
        if isinstance(target, str):
            engine.dispose()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


def paginate(
    session: Session, query: Select[Any], *order_by: Any, skip: int = 0, limit: int = 50
) -> tuple[list[Any], int]:
    """One page of ``query`` (ordered by ``order_by``) and the total number of rows."""
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(*order_by).offset(max(skip, 0)).limit(max(limit, 1)))
    return list(rows), count


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session committed on success and rolled back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
