"""Login throttling: counts per name and address in the database, lockouts that double."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from app.errors import TooManyRequests
from app.services.login_throttle import LoginThrottle, address_key
from tests.utils.clock import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def throttle(container: Any, clock: Clock) -> LoginThrottle:
    return LoginThrottle(container.session_factory, container.settings.auth, clock=clock)


def _fail(throttle: LoginThrottle, times: int, username: str = "anya", address: str = "10.0.0.1"):
    for _ in range(times):
        throttle.admit(username, address)  # admitted and never succeeded: a failure


def _lockout_s(throttle: LoginThrottle, username: str = "anya") -> int:
    with pytest.raises(TooManyRequests) as refused:
        throttle.admit(username, "10.0.0.1")
    assert refused.value.retry_after_s is not None
    return refused.value.retry_after_s


def test_limit_reached_locks_the_name_out_for_the_block_time(throttle) -> None:
    _fail(throttle, 5)
    assert _lockout_s(throttle) == 60


def test_the_lockout_ends_after_its_time(throttle, clock) -> None:
    _fail(throttle, 5)
    _lockout_s(throttle)
    clock.advance(60)
    throttle.admit("anya", "10.0.0.1")


def test_each_further_lockout_doubles_up_to_the_maximum(throttle, clock) -> None:
    lockouts = []
    for _ in range(6):
        _fail(throttle, 5)
        lockouts.append(_lockout_s(throttle))
        clock.advance(lockouts[-1])
    assert lockouts == [60, 120, 240, 480, 900, 900]


def test_a_quiet_spell_after_a_lockout_starts_the_doubling_over(throttle, clock) -> None:
    _fail(throttle, 5)
    clock.advance(_lockout_s(throttle) + 900)
    _fail(throttle, 5)
    assert _lockout_s(throttle) == 60


def test_failures_older_than_the_window_do_not_count(throttle, clock) -> None:
    _fail(throttle, 4)
    clock.advance(61)
    _fail(throttle, 4)
    throttle.admit("anya", "10.0.0.1")


def test_names_differing_in_case_share_a_count(throttle) -> None:
    _fail(throttle, 3, "anya")
    _fail(throttle, 2, "ANYA")
    assert _lockout_s(throttle, "Anya") == 60


def test_a_success_gives_the_address_its_attempt_back(throttle) -> None:
    # 19 failures from one address, then 10 logins that succeed: the address is not locked.
    for i in range(19):
        throttle.admit(f"nobody{i}", "10.0.0.1")
    for _ in range(10):
        throttle.succeeded(throttle.admit("anya", "10.0.0.1"))
    throttle.admit("someone", "10.0.0.1")


def test_an_ipv6_client_counts_as_its_64_network() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::2")
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:10.0.0.1") == address_key("10.0.0.1")


def test_parallel_attempts_of_one_name_admit_no_more_than_the_limit(throttle) -> None:
    admitted: list[int] = []
    refused: list[int] = []
    start = threading.Barrier(12)

    def attempt() -> None:
        start.wait()
        try:
            throttle.admit("anya", None)
            admitted.append(1)
        except TooManyRequests:
            refused.append(1)

    threads = [threading.Thread(target=attempt) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(admitted), len(refused)) == (5, 7)


def test_purge_drops_counters_that_no_longer_matter(throttle, clock) -> None:
    _fail(throttle, 5)
    _lockout_s(throttle)
    assert throttle.purge() == 0
    clock.advance(60 + 2 * 900 + 1)
    assert throttle.purge() == 2  # the name's and the address's
