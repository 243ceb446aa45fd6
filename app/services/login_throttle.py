"""Login throttling: failed attempts counted per username and per client address in the
database (so every app process shares them), checked before any password hash is computed.

Each attempt is counted when it is admitted, before the password check, and given back when it
succeeds: so a burst of parallel guesses is bounded too, not only guesses one after another.
Once ``limit`` attempts of a key failed within the window, the next one starts a lockout of
``login_block_s`` that doubles with each further lockout of that key (up to
``login_max_block_s``); a quiet ``login_max_block_s`` after a lockout starts the doubling over.
A lockout refuses every attempt of its key, the right password too, with
:class:`~app.errors.TooManyRequests` (HTTP 429 and ``Retry-After``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from app.db import session_scope
from app.errors import TooManyRequests
from app.models import LoginCounter, utcnow
from app.settings import AuthSettings

log = logging.getLogger(__name__)


def _aware(value: dt.datetime) -> dt.datetime:
    # SQLite returns naive datetimes for timezone-aware columns; they were written in UTC.
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def username_key(username: str) -> str:
    # Names are matched case-sensitively at login, but "Anya" and "anya" are one target.
    return "user:" + (username or "").replace("\x00", "").strip().lower()[:100]


def address_key(address: str) -> str:
    """One key per client address; an IPv6 address counts as its /64, which one client
    usually holds whole (otherwise each guess could come from a new address)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "addr:" + address.replace("\x00", "")[:100]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"addr:{ip.ipv4_mapped}"
        return f"addr:{ipaddress.ip_network(f'{ip}/64', strict=False)}"
    return f"addr:{ip}"


@dataclass(frozen=True)
class Attempt:
    """An admitted login attempt: the keys it was counted under."""

    user_key: str
    address_key: str | None


class LoginThrottle:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        auth: AuthSettings,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.session_factory = session_factory
        self.auth = auth
        self.clock = clock
        self.window = dt.timedelta(seconds=auth.login_window_s)
        self.max_block = dt.timedelta(seconds=auth.login_max_block_s)

    def admit(self, username: str, address: str | None) -> Attempt:
        """Count an attempt of ``username`` from ``address``, or refuse it with
        :class:`TooManyRequests` when either is locked out (or just reached its limit)."""
        attempt = Attempt(username_key(username), address_key(address) if address else None)
        limits = {attempt.user_key: self.auth.login_failures_per_user}
        if attempt.address_key is not None:
            limits[attempt.address_key] = self.auth.login_failures_per_address
        now = self.clock()
        waits: list[float] = []
        # Its own transaction: the count stays even when the login's own work rolls back.
        with session_scope(self.session_factory) as session:
            rows = self._lock(session, sorted(limits), now)
            for key, row in rows.items():
                blocked = row.blocked_until and _aware(row.blocked_until)
                if blocked and blocked > now:
                    waits.append((blocked - now).total_seconds())
                    continue
                if blocked and now - blocked >= self.max_block:
                    row.strikes = 0
                if now - _aware(row.window_started_at) >= self.window:
                    row.attempts, row.window_started_at = 0, now
                if row.attempts >= limits[key]:
                    block = self._block_length(row.strikes)
                    row.strikes += 1
                    row.blocked_until = now + block
                    row.attempts, row.window_started_at = 0, now
                    waits.append(block.total_seconds())
                    log.warning(
                        "login lockout of %s for %.0f s (lockout %d in a row)",
                        key,
                        block.total_seconds(),
                        row.strikes,
                    )
                row.updated_at = now
            if not waits:
                for row in rows.values():
                    row.attempts += 1
        if waits:
            wait_s = max(1, math.ceil(max(waits)))
            raise TooManyRequests(
                f"Too many failed logins; try again in {wait_s} seconds", retry_after_s=wait_s
            )
        return attempt

    def succeeded(self, attempt: Attempt) -> None:
        """The attempt was right: the username starts over, the address gets its count back."""
        with session_scope(self.session_factory) as session:
            session.execute(delete(LoginCounter).where(LoginCounter.key == attempt.user_key))
            if attempt.address_key is not None:
                row = self._lock(session, [attempt.address_key], self.clock())[attempt.address_key]
                row.attempts = max(0, row.attempts - 1)

    def purge(self) -> int:
        """Delete counters that can no longer matter (their lockout and its doubling are over)."""
        horizon = self.clock() - self.window - 2 * self.max_block
        with session_scope(self.session_factory) as session:
            result = session.execute(delete(LoginCounter).where(LoginCounter.updated_at < horizon))
            return int(result.rowcount)  # type: ignore[attr-defined]

    def _block_length(self, strikes: int) -> dt.timedelta:
        seconds = self.auth.login_block_s * 2 ** min(strikes, 32)
        return min(dt.timedelta(seconds=seconds), self.max_block)

    @staticmethod
    def _lock(session: Session, keys: list[str], now: dt.datetime) -> dict[str, LoginCounter]:
        """The rows of ``keys``, created if missing, locked until the commit: the upsert is a
        write, so concurrent attempts of one key (in any process) take turns, on PostgreSQL
        (row lock) and SQLite (the write lock) alike. ``keys`` sorted: one lock order."""
        dialect = session.get_bind().dialect.name
        module: Any = postgresql if dialect == "postgresql" else sqlite
        table = LoginCounter.__table__
        for key in keys:
            statement = module.insert(table).values(
                key=key, attempts=0, window_started_at=now, strikes=0, updated_at=now
            )
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=[table.c.key], set_={"key": statement.excluded.key}
                )
            )
        rows = session.scalars(select(LoginCounter).where(LoginCounter.key.in_(keys)))
        return {row.key: row for row in rows}
