"""Password hashing: a bounded number of argon2 computations at once per process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from argon2 import PasswordHasher

from app.errors import Overloaded
from app.security import configure_password_hashing, csrf_token_for, verify_password

pytestmark = pytest.mark.nodb


@pytest.fixture(autouse=True)
def cheap_hashing() -> Iterator[None]:
    yield
    configure_password_hashing(1, 1024)


def _slow_verify(monkeypatch: Any, seconds: float) -> dict[str, int]:
    seen = {"running": 0, "peak": 0}
    lock = threading.Lock()

    def verify(self: PasswordHasher, hash: str, password: str) -> bool:
        with lock:
            seen["running"] += 1
            seen["peak"] = max(seen["peak"], seen["running"])
        time.sleep(seconds)
        with lock:
            seen["running"] -= 1
        return False

    monkeypatch.setattr(PasswordHasher, "verify", verify)
    return seen


def test_at_most_the_configured_number_of_hashes_run_at_once(monkeypatch) -> None:
    configure_password_hashing(1, 1024, max_concurrent=2, wait_s=30)
    verify_password(None, "warm-up")  # makes the dummy hash outside the measurement
    seen = _slow_verify(monkeypatch, 0.2)
    threads = [threading.Thread(target=verify_password, args=(None, "x")) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen["peak"] == 2


def test_a_check_that_finds_no_free_slot_in_time_is_refused_as_overloaded(monkeypatch) -> None:
    configure_password_hashing(1, 1024, max_concurrent=1, wait_s=0.05)
    verify_password(None, "warm-up")
    _slow_verify(monkeypatch, 0.5)
    holder = threading.Thread(target=verify_password, args=(None, "x"))
    holder.start()
    time.sleep(0.1)
    with pytest.raises(Overloaded) as refused:
        verify_password(None, "y")
    holder.join()
    assert refused.value.retry_after_s == 1


def test_the_csrf_token_depends_on_the_session_id_and_the_key() -> None:
    token = csrf_token_for("id-1", "key")
    assert token == csrf_token_for("id-1", "key")
    assert token != csrf_token_for("id-2", "key") != csrf_token_for("id-1", "other-key")
    assert "id-1" not in token
