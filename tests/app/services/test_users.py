"""Accounts: what a login attempt costs, whether or not the name exists."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest

from app.errors import NotAuthenticated
from app.security import configure_password_hashing
from app.services import users as user_service
from tests.utils.users import PASSWORD


@pytest.fixture
def costly_hashing(settings: Any) -> Iterator[None]:
    # Near production's argon2 cost, so the hash dominates the time of a login attempt.
    configure_password_hashing(time_cost=2, memory_cost_kib=16 * 1024)
    yield
    configure_password_hashing(settings.auth.argon2_time_cost, settings.auth.argon2_memory_kib)


def _median_failed_login_s(session: Any, username: str, tries: int = 5) -> float:
    times = []
    for _ in range(tries):
        began = time.perf_counter()
        with pytest.raises(NotAuthenticated):
            user_service.authenticate(session, username, "wrong-password")
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def test_unknown_and_known_names_take_about_as_long(container: Any, costly_hashing: None) -> None:
    with container.session_factory() as session:
        user_service.register(session, "anya", PASSWORD)
        known = _median_failed_login_s(session, "anya")
        unknown = _median_failed_login_s(session, "nobody")
    # Coarse on purpose (shared CI cores): without the dummy hash the ratio is about 0.01.
    assert unknown > 0.5 * known, (known, unknown)
