"""The maintenance thread (app.services.maintenance): with ``library.discovery_period_s`` set it
asks, that often at most, which libraries are due for concept discovery and queues their jobs;
0 turns it off; a failing check is logged and tried again next period."""

from __future__ import annotations

import threading
from typing import Any

from app.services.maintenance import DISCOVERY_CHECK_S, Maintenance


def _maintenance(settings_factory: Any, period: int, discover: Any) -> Maintenance:
    settings = settings_factory(library={"discovery_period_s": period},
                                worker={"reap_period_s": 0}, storage={"sweep_period_s": 0})
    return Maintenance(settings, jobs=None, store=None, referenced=set,  # type: ignore[arg-type]
                       discover=discover)


def test_the_thread_queues_discovery_every_period(settings_factory: Any) -> None:
    calls = threading.Event()
    seen: list[int] = []

    def discover() -> list[int]:
        seen.append(1)
        calls.set()
        return [7]

    maintenance = _maintenance(settings_factory, 1, discover)
    maintenance.start()
    try:
        assert calls.wait(5), "discovery was never asked for"
    finally:
        maintenance.stop()
    assert seen and maintenance.discover() == [7]


def test_a_long_period_is_checked_every_few_minutes(settings_factory: Any) -> None:
    maintenance = _maintenance(settings_factory, 86400, lambda: [])
    assert maintenance.discover_period_s == DISCOVERY_CHECK_S


def test_zero_turns_discovery_off(settings_factory: Any) -> None:
    maintenance = _maintenance(settings_factory, 0, lambda: [1])
    maintenance.start()
    assert maintenance._thread is None  # nothing at all to do: no thread
    maintenance.stop()


def test_a_failing_check_is_logged_and_skipped(settings_factory: Any, caplog: Any) -> None:
    def broken() -> list[int]:
        raise RuntimeError("the broker is away")

    assert _maintenance(settings_factory, 1, broken).discover() == []
    assert "queueing concept discovery failed: the broker is away" in caplog.text
