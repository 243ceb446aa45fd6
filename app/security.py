"""Password hashing (argon2) and API tokens (random secrets stored as SHA-256 digests)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
#: A hash of a random password at the current cost, verified when a login names no account.
_dummy_hash: str | None = None


def configure_password_hashing(time_cost: int, memory_cost_kib: int) -> None:
    """Set argon2's cost (the defaults are argon2-cffi's; tests lower them for speed)."""
    global _hasher, _dummy_hash
    _hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost_kib)
    _dummy_hash = None


TOKEN_PREFIX = "repic_"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; ``None`` (no such account) is checked
    against a dummy hash of the same cost and is always false, so an unknown name answers as
    slowly as a wrong password and response times do not reveal which names exist."""
    global _dummy_hash
    if password_hash is None:
        if _dummy_hash is None:
            _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
        _verify(_dummy_hash, password)
        return False
    return _verify(password_hash, password)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    """A bearer token; only its digest is stored, so a database leak reveals no token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
