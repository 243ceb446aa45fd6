"""Accounts and API tokens."""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.errors import Conflict, Forbidden, InvalidInput, NotAuthenticated, NotFound
from app.models import ApiToken, User, utcnow
from app.security import hash_password, new_token, token_digest, verify_password
from app.settings import AuthSettings

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{3,64}$")
#: last_used_at is written at most this often per token, so every request is not a write.
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)


def validate_credentials(username: str, password: str, min_password_length: int) -> str:
    username = (username or "").strip()
    if not USERNAME_RE.match(username):
        raise InvalidInput("Username must be 3-64 characters: letters, digits, '_', '.' or '-'")
    if len(password or "") < min_password_length:
        raise InvalidInput(f"Password must be at least {min_password_length} characters")
    if len(password) > 1024:
        raise InvalidInput("Password must be at most 1024 characters")
    return username


def register(
    session: Session,
    username: str,
    password: str,
    *,
    min_password_length: int = 8,
    is_admin: bool = False,
) -> User:
    username = validate_credentials(username, password, min_password_length)
    if session.scalar(select(User.id).where(func.lower(User.username) == username.lower())):
        raise Conflict("Username already taken")
    user = User(username=username, password_hash=hash_password(password), is_admin=is_admin)
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict("Username already taken") from None
    return user


def sign_up(session: Session, username: str, password: str, auth: AuthSettings) -> User:
    """Self-service registration, under the server's registration policy."""
    if not auth.allow_registration:
        raise Forbidden("Registration is closed on this server")
    return register(session, username, password, min_password_length=auth.min_password_length)


def authenticate(session: Session, username: str, password: str) -> User:
    user = session.scalar(select(User).where(User.username == (username or "").strip()))
    # An unknown name pays for one hash check too, so the answer time does not tell names apart.
    matches = verify_password(user.password_hash if user else None, password or "")
    if user is None or not matches:
        raise NotAuthenticated("Incorrect username or password")
    return user


def create_admin(
    session: Session, username: str, password: str, min_password_length: int = 8
) -> User:
    """Create a new admin account. An existing name is a :class:`Conflict`: an existing
    account is made an admin with :func:`promote_admin`, which never touches its password."""
    return register(
        session, username, password, min_password_length=min_password_length, is_admin=True
    )


def user_exists(session: Session, username: str) -> bool:
    """Whether the name is taken (compared as registration does: case-insensitively)."""
    name = (username or "").strip().lower()
    return session.scalar(select(User.id).where(func.lower(User.username) == name)) is not None


def promote_admin(session: Session, username: str) -> User:
    """Make the existing user ``username`` an admin; the password stays as it is."""
    user = session.scalar(select(User).where(User.username == (username or "").strip()))
    if user is None:
        raise NotFound(f"no user named {username!r}")
    if not user.is_admin:
        user.is_admin = True
        session.commit()
    return user


def create_token(
    session: Session, user: User, name: str, ttl_days: int | None = None
) -> tuple[str, ApiToken]:
    """A new bearer token; the plain text is returned once and never stored."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise InvalidInput("Token name must be 1-100 characters")
    token = new_token()
    expires = utcnow() + dt.timedelta(days=ttl_days) if ttl_days else None
    row = ApiToken(
        user_id=user.id,
        name=name,
        token_hash=token_digest(token),
        prefix=token[:12],
        expires_at=expires,
    )
    session.add(row)
    session.commit()
    return token, row


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite returns naive datetimes for timezone-aware columns; they were written in UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def user_for_token(session: Session, token: str) -> User | None:
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(token)))
    now = utcnow()
    if row is None or row.revoked_at is not None:
        return None
    expires = _aware(row.expires_at)
    if expires is not None and expires <= now:
        return None
    last = _aware(row.last_used_at)
    if last is None or now - last > LAST_USED_RESOLUTION:
        row.last_used_at = now
        session.commit()
    return session.get(User, row.user_id)


def revoke_all_tokens(session: Session, user: User) -> int:
    """Revoke every API token of ``user`` not revoked yet (the caller commits); how many."""
    result = session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def list_tokens(session: Session, user: User) -> list[ApiToken]:
    return list(
        session.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id.desc())
        )
    )


def revoke_token(session: Session, user: User, token_id: int) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None or row.user_id != user.id:
        raise NotFound("Token not found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.commit()
    return row


def set_feedback_training(session: Session, user: User, allow: bool) -> User:
    """Turn "allow my feedback to train the model" on or off for ``user``."""
    row = session.get(User, user.id)
    if row is None:
        raise NotFound("User not found")
    row.allow_feedback_training = bool(allow)
    session.commit()
    return row
