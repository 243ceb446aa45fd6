"""Run summaries: the newest one of a version is what the versions table shows."""

from __future__ import annotations

import doctest

from app.services import evaluation_scoring
from app.services.evaluation_scoring import latest_result


def test_the_latest_result_is_the_newest_run_on_any_set() -> None:
    evaluation = {
        "results": {
            "held-out/skip": {"f1": 80.0, "at": "2026-12-01T10:00:00+00:00"},
            "newer/retrieval": {"f1": 42.0, "at": "2026-12-02T09:00:00+00:00"},
        },
        "forced_activations": [{"at": "2026-12-03T00:00:00+00:00"}],
    }
    latest = latest_result(evaluation)
    assert latest is not None and latest["f1"] == 42.0


def test_a_version_never_evaluated_has_no_latest_result() -> None:
    assert latest_result({}) is None and latest_result(None) is None
    assert latest_result({"forced_activations": []}) is None


def test_evaluation_scoring_doctests_pass() -> None:
    assert doctest.testmod(evaluation_scoring).failed == 0
