"""Password hashing (argon2, a bounded number at once), API tokens and browser session ids
(random secrets stored as SHA-256 digests), and the CSRF tokens bound to session ids."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.errors import Overloaded

_hasher = PasswordHasher()
#: A hash of a random password at the current cost, verified when a login names no account.
_dummy_hash: str | None = None
#: Each argon2 computation holds ``memory_cost`` (64 MiB by default) for its duration: a
#: process-wide bound, so a burst of logins cannot take the memory of the whole host.
_slots = threading.BoundedSemaphore(4)
_slot_wait_s = 2.0


def configure_password_hashing(
    time_cost: int, memory_cost_kib: int, max_concurrent: int = 4, wait_s: float = 2.0
) -> None:
    """Set argon2's cost (the defaults are argon2-cffi's; tests lower them for speed), how many
    hashes run at once and how long a caller waits for a slot before :class:`Overloaded`."""
    global _hasher, _dummy_hash, _slots, _slot_wait_s
    _hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost_kib)
    _dummy_hash = None
    _slots = threading.BoundedSemaphore(max_concurrent)
    _slot_wait_s = wait_s


@contextmanager
def _hash_slot() -> Iterator[None]:
    slots = _slots  # the one acquired is the one released, even if reconfigured meanwhile
    if not slots.acquire(timeout=_slot_wait_s):
        raise Overloaded("Too many logins at once; try again in a moment")
    try:
        yield
    finally:
        slots.release()


TOKEN_PREFIX = "repic_"


def hash_password(password: str) -> str:
    with _hash_slot():
        return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; ``None`` (no such account) is checked
    against a dummy hash of the same cost and is always false, so an unknown name answers as
    slowly as a wrong password and response times do not reveal which names exist."""
    global _dummy_hash
    if password_hash is None:
        if _dummy_hash is None:
            _dummy_hash = hash_password(secrets.token_urlsafe(16))
        _verify(_dummy_hash, password)
        return False
    return _verify(password_hash, password)


def _verify(password_hash: str, password: str) -> bool:
    with _hash_slot():
        try:
            return _hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


def new_token() -> str:
    """A bearer token; only its digest is stored, so a database leak reveals no token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_session_token() -> str:
    """A browser session id: 32 random bytes, URL-safe; the cookie carries nothing else."""
    return secrets.token_urlsafe(32)


def csrf_token_for(session_token: str, secret_key: str) -> str:
    """The CSRF token of a session id: an HMAC, so it needs no storage, changes with every new
    session, and neither reveals the id nor can be made without the server's key."""
    mac = hmac.new(secret_key.encode(), b"csrf:" + session_token.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
