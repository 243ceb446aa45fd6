"""The promotion gate: may a candidate version replace the active one, judged on their
evaluation results; and the record of activations an admin forced past it.

:class:`EvaluationGate` is plugged into ``VersionService.gate``. It refuses to activate a version
whose grounding F1 (paper mode) on the gate set is more than ``evaluation.gate_margin_f1``
points below the active version's; an admin may force it, which is logged and recorded on the
version. Only the settings in :data:`~app.enums.GATED_SETTINGS` count (never ``wrong``, where
lower is better).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.enums import GATED_SETTINGS
from app.errors import Conflict
from app.models import EvaluationSet, ModelVersion, User, utcnow
from app.settings import EvaluationSettings, Settings

log = logging.getLogger(__name__)


class GateRefused(Conflict):
    """Activation refused by the promotion gate; the message carries the numbers."""


@dataclass
class GateDecision:
    allowed: bool
    reason: str
    set_name: str | None = None
    setting: str | None = None
    candidate_f1: float | None = None
    active_f1: float | None = None
    margin: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def version_label(version: ModelVersion) -> str:
    return f"v{version.id}"


def gated_results(version: ModelVersion | None) -> dict[str, dict[str, Any]]:
    """``version``'s result summaries the gate may compare (a gated setting, an F1)."""
    results = ((version.evaluation or {}).get("results") or {}) if version is not None else {}
    return {
        key: value
        for key, value in results.items()
        if isinstance(value, dict)
        and value.get("setting") in GATED_SETTINGS
        and not value.get("lower_is_better")
        and value.get("f1") is not None
    }


def _prefer(keys: Sequence[str], results: dict[str, dict[str, Any]]) -> str:
    order = {s: i for i, s in enumerate(GATED_SETTINGS)}
    return min(keys, key=lambda k: (order.get(results[k]["setting"], 99), k))


def gate_check(
    session: Session,
    candidate: ModelVersion,
    active: ModelVersion | None,
    settings: Settings | EvaluationSettings,
) -> GateDecision:
    """May ``candidate`` replace ``active``? Compares grounding F1 (paper mode) on the gate set.

    The gate set is ``evaluation.gate_set``; if empty, the most recent set (and setting) both
    versions were evaluated on. Refused when the candidate's F1 is lower than the active's by
    more than ``evaluation.gate_margin_f1`` points, or when the active version has a result the
    candidate lacks. Allowed when there is nothing to compare against (no active version, or
    an active version never evaluated).
    """
    cfg = settings.evaluation if isinstance(settings, Settings) else settings
    margin = float(cfg.gate_margin_f1)
    if active is None or active.id == candidate.id:
        return GateDecision(True, "no other active version", margin=margin)
    mine, theirs = gated_results(candidate), gated_results(active)
    cand, act = version_label(candidate), version_label(active)
    if cfg.gate_set:
        on_set = [k for k, v in theirs.items() if v.get("set") == cfg.gate_set]
        if not on_set:
            return GateDecision(
                True,
                f"active {act} has no evaluation on set '{cfg.gate_set}'",
                set_name=cfg.gate_set,
                margin=margin,
            )
        both = [k for k in on_set if k in mine]
        if not both:
            key = _prefer(on_set, theirs)
            res = theirs[key]
            return GateDecision(
                False,
                f"{cand} has no evaluation on set '{res['set']}' ({res['setting']}) while "
                f"active {act} has F1 {res['f1']:.1f}; evaluate it first or activate with "
                "force=true",
                set_name=res["set"],
                setting=res["setting"],
                active_f1=res["f1"],
                margin=margin,
            )
        key = _prefer(both, theirs)
    else:
        if not theirs:
            return GateDecision(
                True, f"active {act} has no evaluation to compare with", margin=margin
            )
        both = [k for k in theirs if k in mine]
        if not both:
            return GateDecision(
                False,
                f"{cand} was never evaluated on a set that active {act} was evaluated on; "
                "evaluate it first or activate with force=true",
                margin=margin,
            )
        key = max(
            both, key=lambda k: (max(str(mine[k].get("at", "")), str(theirs[k].get("at", ""))), k)
        )
    c, a = mine[key], theirs[key]
    cf1, af1 = float(c["f1"]), float(a["f1"])
    decision = GateDecision(
        True,
        "",
        set_name=c.get("set"),
        setting=c.get("setting"),
        candidate_f1=cf1,
        active_f1=af1,
        margin=margin,
    )
    where = f"on set '{c.get('set')}' ({c.get('setting')})"
    if cf1 < af1 - margin:
        decision.allowed = False
        decision.reason = (
            f"{cand} F1 {cf1:.1f} < active {act} F1 {af1:.1f} - {margin:.1f} "
            f"{where}; activate with force=true to override"
        )
    else:
        decision.reason = f"{cand} F1 {cf1:.1f} >= active {act} F1 {af1:.1f} - {margin:.1f} {where}"
    return decision


def record_forced_activation(
    session: Session,
    candidate: ModelVersion,
    active: ModelVersion | None,
    settings: Settings | EvaluationSettings,
    actor: User | None,
) -> GateDecision:
    """Log and store (on the candidate's evaluation JSON) an activation forced past the gate.

    Not committed here: the activation that follows commits it with the state change, so a
    failed activation leaves no record.
    """
    decision = gate_check(session, candidate, active, settings)
    who = actor.username if actor is not None else "system"
    log.warning(
        "forced activation of %s by %s (gate %s: %s)",
        version_label(candidate),
        who,
        "would allow" if decision.allowed else "refused",
        decision.reason,
    )
    record = {
        "at": utcnow().isoformat(),
        "by": who,
        "active_version_id": active.id if active is not None else None,
        "gate": decision.to_dict(),
    }
    data = dict(candidate.evaluation or {})
    data["forced_activations"] = [*(data.get("forced_activations") or []), record]
    candidate.evaluation = data
    return decision


def forced_past_gate(version: ModelVersion) -> dict[str, Any] | None:
    """The record of ``version``'s latest forced activation if the gate refused it (what the
    pages say beside the version and right after forcing it), else None."""
    records = (version.evaluation or {}).get("forced_activations") or []
    if records and not (records[-1].get("gate") or {}).get("allowed", True):
        latest: dict[str, Any] = records[-1]
        return latest
    return None


class EvaluationGate:
    """``VersionService.gate``: raises :class:`GateRefused` with the numbers."""

    def __init__(self, settings: Settings | EvaluationSettings) -> None:
        self.settings = settings

    def __call__(
        self, session: Session, candidate: ModelVersion, active: ModelVersion | None
    ) -> None:
        decision = gate_check(session, candidate, active, self.settings)
        log.info("promotion gate for %s: %s", version_label(candidate), decision.reason)
        if not decision.allowed:
            raise GateRefused(decision.reason)

    def forced(
        self,
        session: Session,
        candidate: ModelVersion,
        active: ModelVersion | None,
        actor: User | None = None,
    ) -> GateDecision:
        return record_forced_activation(session, candidate, active, self.settings, actor)


def find_gate_set(session: Session, name: str) -> EvaluationSet | None:
    """The gate set by name: an admin's set first, then the newest of that name."""
    rows = list(
        session.execute(
            select(EvaluationSet, User.is_admin)
            .join(User, User.id == EvaluationSet.owner_id)
            .where(EvaluationSet.name == name)
            .order_by(EvaluationSet.id.desc())
        ).all()
    )
    if not rows:
        return None
    admins = [s for s, is_admin in rows if is_admin]
    return admins[0] if admins else rows[0][0]
