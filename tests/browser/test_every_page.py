"""Every page, with data on it, at desktop (1280 px) and phone (390 px) width: no sideways
scrolling and no serious (or critical) accessibility violation found by axe-core.

`make screenshots` runs this test with ``REPIC_SCREENSHOTS_DIR`` set, so the same tour saves a
full-page screenshot of every page at both widths for reviewers.
"""

from __future__ import annotations

import httpx
import pytest

from app.models import (
    Caption,
    ConceptSuggestion,
    ConceptSuggestionPhoto,
    EvaluationSet,
    Job,
    LibraryPhoto,
    LibraryPhotoConcept,
    User,
)
from tests.browser.conftest import new_context
from tests.utils.browser import (
    DESKTOP,
    PHONE,
    add_evaluation,
    add_version,
    axe_violations,
    bearer,
    database,
    login,
    make_admin,
    overflow_px,
    register_api,
    screenshot,
)
from tests.utils.images import FIXTURES

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PHOTOS = FIXTURES / "dreambooth"


def _concept(base_url: str, headers: dict[str, str], name: str, kind: str) -> dict:  # type: ignore[type-arg]
    files = [("images", (f"{n}.jpg", (PHOTOS / kind / f"{n}.jpg").read_bytes(), "image/jpeg"))
             for n in ("02", "03", "04")]
    r = httpx.post(f"{base_url}/api/concepts", headers=headers, files=files, timeout=120,
                   data={"name": name, "description": f"our {kind}", "category": kind,
                         "use_for_training": "true"})
    assert r.status_code == 201, r.text
    return r.json()


def _seed(settings, base_url: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Data on every page; returns the pages to visit by name."""
    make_admin(settings, "root")
    headers = bearer(base_url, "root")
    bo = _concept(base_url, headers, "bo", "dog")
    _concept(base_url, headers, "mia", "cat")
    # Shared both ways: "Shared with" on bo's page, "Shared with you" and a read-only page.
    gran = register_api(base_url, "gran")
    rex = _concept(base_url, gran, "rex", "dog")
    for concept, owner, invitee in ((rex, gran, "root"), (bo, headers, "gran")):
        r = httpx.post(f"{base_url}/api/concepts/{concept['id']}/shares", headers=owner,
                       json={"username": invitee})
        assert r.status_code == 201, r.text
    held_out = bo["images"][2]["id"]
    r = httpx.patch(f"{base_url}/api/concepts/{bo['id']}/images/{held_out}", headers=headers,
                    json={"eval_only": True})
    assert r.status_code == 200, r.text
    r = httpx.post(f"{base_url}/api/evaluation-sets/heldout", headers=headers,
                   json={"name": "held-out"})
    assert r.status_code == 201, r.text
    photo = (PHOTOS / "dog" / "02.jpg").read_bytes()
    r = httpx.post(f"{base_url}/api/captions", headers=headers, timeout=120,
                   files=[("image", ("dog.jpg", photo, "image/jpeg"))])
    assert r.status_code == 201, r.text
    # An import no worker runs in this test: the library page shows it queued.
    r = httpx.post(f"{base_url}/api/library/imports", headers=headers, timeout=60,
                   files=[("files", ("cat.jpg", (PHOTOS / "cat" / "02.jpg").read_bytes(),
                                     "image/jpeg"))], data={"paths": ["Pets/cat/cat.jpg"]})
    assert r.status_code == 202, r.text
    # Listing the versions creates the base model's row, as the first page visit would.
    assert httpx.get(f"{base_url}/api/model-versions", headers=headers).status_code == 200
    with database(settings) as session:
        root = session.query(User).filter_by(username="root").one()
        first = session.get(Caption, r.json()["id"])
        assert first is not None
        session.add(Caption(owner_id=root.id, image_sha256=first.image_sha256,
                            image_path=first.image_path, width=first.width,
                            height=first.height, caption="<bo> " + "z" * 3000,
                            concepts=first.concepts, feedback="edited",
                            edited_caption="<bo> naps"))
        # A library photo (the caption's file), captioned, with a concept found in it.
        photo = LibraryPhoto(owner_id=root.id, sha256=first.image_sha256,
                             image_sha256=first.image_sha256, path=first.image_path,
                             original_filename="dog.jpg", album="Pets/dog", format="JPEG",
                             bytes=1, width=first.width, height=first.height,
                             caption_text="<bo> naps on the sofa",
                             search_text="bo naps on the sofa")
        session.add(photo)
        session.flush()
        session.add(LibraryPhotoConcept(photo_id=photo.id, owner_id=root.id, concept_id=bo["id"],
                                        name="bo", score=0.93, box=[0, 0, 10, 10]))
        # A discovery suggestion: the "something unnamed" card with its ticked photos.
        session.add(ConceptSuggestion(owner_id=root.id, state="open", photos=[
            ConceptSuggestionPhoto(photo_id=photo.id, box=[0, 0, 10, 10], score=0.97)]))
        job = Job(kind="training", state="succeeded", queue="gpu", created_by_id=root.id,
                  step=3, total_steps=3, progress=1.0, log_tail="step 3 " + "-" * 2000,
                  history=[{"step": s, "loss": 0.01 / s, "reward": 0.2 * s,
                            "reward_means": {"oct": 0.1 * s}} for s in (1, 2, 3)])
        session.add(job)
        session.flush()
        eval_set = session.query(EvaluationSet).filter_by(name="held-out").one()
        from app.models import ModelVersion

        base = session.query(ModelVersion).filter_by(name="base").one()
        candidate = add_version(session, "run-2026-12-01", settings.caption.model,
                                state="candidate", training_job_id=job.id)
        job.result = {"version_id": candidate.id, "version_name": candidate.name}
        first_eval = add_evaluation(session, base, eval_set, 50.0)
        add_evaluation(session, candidate, eval_set, 62.5)
        pages = {
            "concept": f"/concepts/{bo['id']}",
            "concept-edit": f"/concepts/{bo['id']}/edit",
            "shared-concept": f"/shared-concepts/{rex['id']}",
            "job": f"/admin/jobs/{job.id}",
            "evaluation": f"/admin/evaluations/{first_eval.id}",
            "compare": f"/admin/evaluations/compare?a={base.id}&b={candidate.id}"
                       f"&set={eval_set.id}&setting=skip",
        }
    return pages


ANONYMOUS = {"home": "/", "login": "/login", "register": "/register", "not-found": "/no-such"}
SIGNED_IN = {"concepts": "/concepts", "concept-new": "/concepts/new", "caption": "/caption",
             "account": "/account", "library": "/library", "admin": "/admin",
             "models": "/admin/models",
             "evaluations": "/admin/evaluations", "concept-missing": "/concepts/999999"}


def _visit(page, name: str, url: str, width: str, problems: list[str]) -> None:  # type: ignore[no-untyped-def]
    response = page.goto(url)
    expected = 404 if name in ("not-found", "concept-missing") else 200
    if response is None or response.status != expected:
        problems.append(f"{name} at {width}: {url} answered {response and response.status}")
    _check(page, name, width, problems)


def _check(page, name: str, width: str, problems: list[str]) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_load_state("load")
    screenshot(page, f"{name}-{width}")
    if overflow_px(page) > 0:
        problems.append(f"{name} at {width}: scrolls sideways by {overflow_px(page)} px")
    problems.extend(f"{width}: {v}" for v in axe_violations(page))


def test_every_page_fits_and_passes_axe(browser, live_server, csp_violations, settings) -> None:  # type: ignore[no-untyped-def]
    pages = _seed(settings, live_server.url)
    problems: list[str] = []
    for width, viewport in (("1280", DESKTOP), ("390", PHONE)):
        context = new_context(browser, live_server.url, csp_violations, viewport=viewport)
        page = context.new_page()
        for name, url in ANONYMOUS.items():
            _visit(page, name, url, width, problems)
        login(page, "root")
        for name, url in {**SIGNED_IN, **pages}.items():
            _visit(page, name, url, width, problems)
        page.goto("/caption")
        page.set_input_files("#caption-image", str(PHOTOS / "dog" / "03.jpg"))
        page.click("#caption-submit")
        page.wait_for_selector("#caption-result:not([hidden])", timeout=120_000)
        _check(page, "caption-result", width, problems)
        context.close()
    assert problems == [], "\n".join(problems)
