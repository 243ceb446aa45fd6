"""Browser-test helpers: sideways overflow, the axe-core accessibility check, logging in, and
rows written straight into the live server's database (jobs, versions, captions)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session

from app.settings import Settings
from tests.utils.users import PASSWORD

ROOT = Path(__file__).resolve().parents[2]
#: Pinned in scripts/fetch-axe.sh (version and sha512), which `make test` runs.
AXE_VERSION = "4.14.1"
AXE_PATH = ROOT / ".test-assets" / f"axe-core-{AXE_VERSION}" / "axe.min.js"
#: The impacts that fail a page: axe's two worst of four (minor, moderate, serious, critical).
FAILING_IMPACTS = ("serious", "critical")

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def overflow_px(page: Any) -> int:
    """How far the page scrolls sideways (0 or less: it does not)."""
    return int(page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth"))


def _axe_source() -> str:
    if not AXE_PATH.is_file():
        pytest.fail(f"axe-core is missing at {AXE_PATH}: run scripts/fetch-axe.sh (make test does)")
    return AXE_PATH.read_text(encoding="utf-8")


def axe_violations(page: Any, impacts: tuple[str, ...] = FAILING_IMPACTS) -> list[str]:
    """axe-core's violations of ``impacts`` on the page as it is now, one line each.

    The pages forbid inline scripts (CSP ``script-src 'self'``), so ``add_script_tag``, which
    injects the file's text inline, would be blocked; ``page.evaluate`` runs the source through
    the DevTools protocol, which the page's policy does not govern, and the page keeps its
    policy for everything else."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(_axe_source())
    found = page.evaluate(
        """async () => {
          const r = await axe.run(document, {resultTypes: ["violations"]});
          return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))}));
        }"""
    )
    path = page.evaluate("() => location.pathname + location.search")
    return [
        f"{path}: {v['impact']} {v['id']} ({v['help']}) at {v['nodes']}"
        for v in found
        if v["impact"] in impacts
    ]


def screenshot(page: Any, name: str) -> None:
    """Save a full-page screenshot under ``$REPIC_SCREENSHOTS_DIR`` (`make screenshots` sets
    it); a no-op otherwise."""
    folder = os.environ.get("REPIC_SCREENSHOTS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def login(page: Any, username: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login-submit")
    page.wait_for_url("**/concepts")


def register_api(base_url: str, username: str) -> dict[str, str]:
    """An account made through the API; returns its bearer headers."""
    r = httpx.post(f"{base_url}/api/auth/register",
                   json={"username": username, "password": PASSWORD})
    assert r.status_code == 201, r.text
    return bearer(base_url, username)


def bearer(base_url: str, username: str) -> dict[str, str]:
    r = httpx.post(f"{base_url}/api/auth/token",
                   data={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@contextmanager
def database(settings: Settings) -> Iterator[Session]:
    """A session on the live server's database (committed on success)."""
    from app.db import session_scope
    from app.wiring import build_container

    container = build_container(settings)
    try:
        with session_scope(container.session_factory) as session:
            yield session
    finally:
        container.close()


def make_admin(settings: Settings, username: str = "root") -> None:
    from app.services.users import create_admin

    with database(settings) as session:
        create_admin(session, username, PASSWORD)


def add_version(session: Session, name: str, base_model: str, **fields: Any) -> Any:
    """A model version row that needs no adapter (``base_model`` as the configured one: the
    caption backend serves it as it is, so activating it loads nothing)."""
    from app.models import ModelVersion

    version = ModelVersion(name=name, base_model=base_model, adapter_path=None, config={},
                           data_summary={}, evaluation={}, **fields)
    session.add(version)
    session.flush()
    return version


def add_evaluation(session: Session, version: Any, eval_set: Any, f1: float,
                   setting: str = "skip", at: str | None = None) -> Any:
    """A succeeded evaluation of ``version`` on ``eval_set`` (one caption per query, the first
    name found, any other missed), merged into the version's results as a real run does."""
    from app.models import Caption, Evaluation
    from app.services.evaluation_scoring import result_key, result_summary

    queries = eval_set.queries or []
    metrics = {"set": eval_set.name, "set_id": eval_set.id, "setting": setting, "k": None,
               "precision": f1, "recall": f1, "f1": f1, "slots": len(queries),
               "grounding_strict": {"precision": f1, "recall": f1, "f1": f1},
               "clip_score": None, "queries": len(queries)}
    evaluation = Evaluation(model_version_id=version.id, evaluation_set_id=eval_set.id,
                            settings={"setting": setting}, metrics=metrics, state="succeeded")
    session.add(evaluation)
    session.flush()
    for i, query in enumerate(queries):
        names = query.get("names", [])
        slots = {n: ("correct" if i == 0 and j == 0 else "none") for j, n in enumerate(names)}
        session.add(Caption(owner_id=eval_set.owner_id, image_sha256=query.get("sha256", ""),
                            image_path=query["image"], caption=f"<{names[0]}> in a garden"
                            if names else "a garden", concepts=[], evaluation_id=evaluation.id,
                            model_version_id=version.id,
                            scores={"slots": slots, "clip_score": None}))
    summary = result_summary(evaluation.id, metrics)
    if at is not None:
        summary["at"] = at
    data = dict(version.evaluation or {})
    data["results"] = {**(data.get("results") or {}), result_key(eval_set.name, setting): summary}
    version.evaluation = data
    session.flush()
    return evaluation
