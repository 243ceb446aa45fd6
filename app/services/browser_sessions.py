"""Browser sessions as database rows: started at login, looked up on every request, ended at
once by logout, a password change or "log out everywhere", in every app process alike.

The cookie carries a random id and nothing else (no user id, no CSRF token, no flash); the row
keeps only the id's SHA-256, so a database leak reveals no usable cookie.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.models import User, UserSession, utcnow
from app.security import new_session_token, token_digest

#: last_seen_at is written at most this often per session, so every request is not a write.
LAST_SEEN_RESOLUTION = dt.timedelta(seconds=60)


@dataclass(frozen=True)
class Client:
    """Where a request came from, as far as the server can tell (shown on the account page)."""

    address: str = ""
    user_agent: str = ""


def _aware(value: dt.datetime) -> dt.datetime:
    # SQLite returns naive datetimes for timezone-aware columns; they were written in UTC.
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def end_user_sessions(session: Session, user_id: int, now: dt.datetime | None = None) -> int:
    """End every live session of ``user_id`` (the caller commits); how many were live."""
    result = session.execute(
        update(UserSession)
        .where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


class BrowserSessions:
    """Starts, resolves and ends sessions; keeps their flash messages."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        max_age_s: int,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.session_factory = session_factory
        self.max_age = dt.timedelta(seconds=max_age_s)
        self.clock = clock

    def start(self, session: Session, user: User, client: Client) -> str:
        """A new session of ``user``; returns the id for the cookie (never stored as such)."""
        token = new_session_token()
        now = self.clock()
        session.add(
            UserSession(
                token_hash=token_digest(token),
                user_id=user.id,
                created_at=now,
                last_seen_at=now,
                expires_at=now + self.max_age,
                user_agent=client.user_agent[:255],
                address=client.address[:64],
            )
        )
        session.commit()
        return token

    def resolve(self, session: Session, token: str, touch: bool = True) -> UserSession | None:
        """The live session of cookie ``token`` (None: unknown, ended or expired)."""
        row = session.get(UserSession, token_digest(token))
        now = self.clock()
        if row is None or row.revoked_at is not None or _aware(row.expires_at) <= now:
            return None
        if touch and now - _aware(row.last_seen_at) > LAST_SEEN_RESOLUTION:
            row.last_seen_at = now
            session.commit()
        return row

    def user(self, session: Session, token: str, touch: bool = True) -> User | None:
        row = self.resolve(session, token, touch)
        return session.get(User, row.user_id) if row is not None else None

    def end(self, session: Session, token: str) -> None:
        """Log out the session of ``token`` (nothing happens for an unknown one)."""
        session.execute(
            update(UserSession)
            .where(UserSession.token_hash == token_digest(token), UserSession.revoked_at.is_(None))
            .values(revoked_at=self.clock())
        )
        session.commit()

    def live(self, session: Session, user: User) -> list[UserSession]:
        """``user``'s live sessions, the most recently seen first."""
        return list(
            session.scalars(
                select(UserSession)
                .where(
                    UserSession.user_id == user.id,
                    UserSession.revoked_at.is_(None),
                    UserSession.expires_at > self.clock(),
                )
                .order_by(UserSession.last_seen_at.desc())
            )
        )

    def add_flash(self, token: str, kind: str, message: str) -> None:
        """Keep ``message`` for the next page this session renders (dropped without a session:
        only logged-in pages flash)."""
        with self.session_factory() as session:
            row = session.get(UserSession, token_digest(token))
            if row is None or row.revoked_at is not None:
                return
            row.flashes = [*(row.flashes or []), {"kind": kind, "message": message}]
            session.commit()

    def take_flashes(self, token: str) -> list[dict[str, Any]]:
        """The session's waiting messages, removed from it (read-only when there are none)."""
        with self.session_factory() as session:
            row = session.get(UserSession, token_digest(token))
            if row is None or not row.flashes:
                return []
            flashes = list(row.flashes)
            row.flashes = None
            session.commit()
            return flashes

    def purge(self) -> int:
        """Delete the rows of ended and expired sessions; how many."""
        with self.session_factory() as session:
            result = session.execute(
                delete(UserSession).where(
                    or_(UserSession.revoked_at.is_not(None), UserSession.expires_at <= self.clock())
                )
            )
            session.commit()
            return int(result.rowcount)  # type: ignore[attr-defined]
