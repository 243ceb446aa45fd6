"""The record of an activation forced past the promotion gate, as the pages read it."""

from __future__ import annotations

from app.models import ModelVersion
from app.services.evaluation_gate import forced_past_gate


def _version(*gates: bool) -> ModelVersion:
    records = [{"by": "root", "gate": {"allowed": allowed, "reason": f"gate {i}"}}
               for i, allowed in enumerate(gates)]
    return ModelVersion(name="v", base_model="m", evaluation={"forced_activations": records})


def test_a_forced_activation_the_gate_refused_is_reported() -> None:
    record = forced_past_gate(_version(False))
    assert record is not None and record["gate"]["reason"] == "gate 0"


def test_a_forced_activation_the_gate_would_have_allowed_is_not() -> None:
    # A rollback is always forced; when the gate would have let it pass, nothing is overridden.
    assert forced_past_gate(_version(True)) is None


def test_only_the_latest_forced_activation_counts() -> None:
    assert forced_past_gate(_version(False, True)) is None
    assert forced_past_gate(ModelVersion(name="v", base_model="m", evaluation={})) is None
