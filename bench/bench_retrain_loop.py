"""The retrain loop end to end, offline: base F1 -> admin GRPO retrain -> new F1 -> promotion.

What an admin of the embedded profile does, through the app's own API and pages, with the
name-copying tiny Qwen2.5-VL that ``repic models build-tiny`` builds (trainer/tiny_copier.py):

1. an owner registers DreamBooth subjects as concepts (fake first names from the trainer's
   pool, a few photos each for training) and marks two more photos of each evaluation-only;
2. ``POST /api/evaluation-sets/heldout`` makes the held-out set of those photos, which is
   also the gate set (``evaluation.gate_set``);
3. the base version is evaluated on it (``POST /api/admin/evaluations``, setting ``skip``: the
   ground-truth concept is the demonstration; and ``retrieval``, the tiny CLIP choosing);
4. ``POST /api/admin/training-jobs`` retrains (GRPO, the RePIC ICT reward, names drawn per
   epoch, LoRA; trainer/configs/tiny_copier.yaml) on the concepts' training photos only; the
   job evaluates the candidate on the gate set as every training job does;
5. the versions page (/admin) shows both versions' F1 side by side, and the gate lets the
   candidate be activated.

Jobs run in this process as a worker runs them (job rows, the job runtime). Exits 1 when the
F1 did not rise or the gate refused. Minutes on 2 CPU cores; ``--tiny-dir`` reuses a build.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data" / "dreambooth"
FIXTURES = ROOT / "tests" / "fixtures" / "dreambooth"
PASSWORD = "correct horse battery"
#: Retrieval first, so the versions page (latest result per version) shows the gate's setting.
SETTINGS = ("retrieval", "skip")


def subjects(count: int, photos: int) -> list[list[Path]]:
    root = SHARED if SHARED.is_dir() else FIXTURES
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        images = sorted(folder.glob("*.jpg"))
        if len(images) >= photos:
            found.append(images[:photos])
    return found[:count]


def run_job(client: Any, job_id: int) -> dict[str, Any]:
    container = client.app.state.container
    container.job_runtime.execute(job_id, None, "bench")
    from app.models import Job

    with container.session_factory() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return {"state": job.state, "result": job.result or {}, "error": job.error}


def check(response: Any, code: int = 200) -> Any:
    if response.status_code != code:
        raise SystemExit(f"{response.request.method} {response.request.url}: "
                         f"{response.status_code} {response.text[:500]}")
    return response.json() if "json" in response.headers.get("content-type", "") else response


def evaluate(client: Any, admin: dict[str, str], version_id: int, set_name: str,
             setting: str) -> dict[str, Any]:
    body = check(client.post("/api/admin/evaluations", headers=admin, json={
        "version_id": version_id, "set": set_name, "setting": setting}), 201)
    job = run_job(client, body["job"]["id"])
    if job["state"] != "succeeded":
        raise SystemExit(f"evaluation failed: {job['error']}")
    return check(client.get(f"/api/evaluations/{body['evaluation']['id']}", headers=admin))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=11,
                        help="DreamBooth subjects registered (at most 11: one pool name "
                        "in 97 is used).")
    parser.add_argument("--train-photos", type=int, default=3)
    parser.add_argument("--eval-photos", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None,
                        help="GRPO steps (default: trainer/configs/tiny_copier.yaml's).")
    parser.add_argument("--tiny-dir", type=Path, default=None,
                        help="Reuse (or build once into) this folder of tiny models.")
    parser.add_argument("--json", type=Path, default=None, help="Write the figures here.")
    parser.add_argument("--markdown", action="store_true", help="Print a docs/benchmarks.md table.")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from fastapi.testclient import TestClient

    from app.db import session_scope
    from app.main import create_app
    from app.migrate import upgrade
    from app.model_services import ModelLoading, ensure_tiny_models
    from app.services.users import create_admin
    from app.settings import Settings
    from app.wiring import build_container
    from trainer.tiny_copier import copier_names

    figures: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
    with tempfile.TemporaryDirectory(prefix="repic-bench-retrain-") as tmp:
        root = Path(tmp)
        tiny = args.tiny_dir or root / "tiny"
        common = dict(
            _env_file=None, storage={"data_dir": root / "data"}, tiny_models_dir=tiny,
            auth={"argon2_time_cost": 1, "argon2_memory_kib": 1024},
        )
        began = time.perf_counter()
        tiny_settings = Settings(**common)  # type: ignore[arg-type]
        paths = {part: ensure_tiny_models(tiny_settings, part) for part in ("vlm", "clip")}
        figures["build_tiny_s"] = round(time.perf_counter() - began, 1)
        marker = json.loads((paths["vlm"] / "repic_tiny.json").read_text())
        figures["copier"] = {k: marker.get(k) for k in
                             ("copier", "final_loss", "checks_after", "warm_up_s")}
        settings = Settings(
            **common,  # type: ignore[arg-type]
            embedder={"model_name": "local-dir:" + str(paths["clip"]), "pretrained": ""},
            detector={"kind": "none"},
            retrieval={"min_score": 0.0},
            caption={"backend": "inprocess", "model": str(paths["vlm"]),
                     "min_pixels": 28 * 28, "max_pixels": 112 * 112, "max_new_tokens": 64},
            evaluation={"gate_set": "heldout", "gate_margin_f1": 1.0},
        )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings.database_url)
        container = build_container(settings, ModelLoading.ALL)
        try:
            with session_scope(container.session_factory) as session:
                create_admin(session, "admin", PASSWORD)
            with TestClient(create_app(container=container)) as client:
                token = check(client.post("/api/auth/token", data={
                    "username": "admin", "password": PASSWORD}))["access_token"]
                admin = {"Authorization": f"Bearer {token}"}
                shown = subjects(args.subjects, args.train_photos + args.eval_photos)
                names = copier_names()[::97][: len(shown)]
                shown = shown[: len(names)]
                for name, photos in zip(names, shown, strict=True):
                    files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
                    concept = check(client.post("/api/concepts", headers=admin, files=files, data={
                        "name": name.strip("<>"), "category": photos[0].parent.name,
                        "description": f"our {photos[0].parent.name.replace('_', ' ')}",
                        "use_for_training": "true"}), 201)
                    for image in concept["images"][args.train_photos:]:
                        check(client.patch(f"/api/concepts/{concept['id']}/images/{image['id']}",
                                           headers=admin, json={"eval_only": True}))
                held = check(client.post("/api/evaluation-sets/heldout", headers=admin,
                                         json={"name": "heldout"}), 201)
                figures["concepts"] = len(shown)
                figures["heldout_queries"] = held["queries"]
                versions = check(client.get("/api/model-versions", headers=admin))["data"]
                base_id = next(v["id"] for v in versions if v["state"] == "active")
                results: dict[str, dict[str, Any]] = {"base": {}, "retrained": {}}
                for setting in SETTINGS:
                    results["base"][setting] = evaluate(client, admin, base_id, "heldout", setting)
                overrides: dict[str, Any] = {}
                if args.steps:
                    overrides["max_steps"] = args.steps
                job = check(client.post("/api/admin/training-jobs", headers=admin, json={
                    "dataset": "concepts", "overrides": overrides}), 201)
                began = time.perf_counter()
                trained = run_job(client, job["id"])
                figures["retrain_s"] = round(time.perf_counter() - began, 1)
                if trained["state"] != "succeeded":
                    raise SystemExit(f"training failed: {trained['error']}")
                new_id = trained["result"]["version_id"]
                history = check(client.get(f"/api/jobs/{job['id']}", headers=admin))["history"]
                figures["reward_by_step"] = [
                    round(float(h.get("reward") or 0.0), 3) for h in history]
                figures["post_training"] = trained["result"].get("post_training")
                for setting in SETTINGS:
                    results["retrained"][setting] = evaluate(client, admin, new_id, "heldout",
                                                             setting)
                csrf = re.search(r'name="csrf-token" content="([^"]+)"',
                                 client.get("/login").text)
                assert csrf, "no CSRF token on the login page"
                client.post("/login", data={"username": "admin", "password": PASSWORD,
                                            "csrf_token": csrf.group(1)})
                page = check(client.get("/admin")).text
                figures["versions_page_f1"] = re.findall(r"F1 <strong>([^<]*)</strong>", page)
                activated = client.post(f"/api/model-versions/{new_id}/activate", headers=admin)
                figures["activation"] = activated.status_code
                for label, per in results.items():
                    for setting, row in per.items():
                        metrics = row.get("metrics") or {}
                        figures[f"{label}_{setting}"] = {
                            k: metrics.get(k) for k in ("precision", "recall", "f1", "slots")}
        finally:
            container.close()

    base, new = figures["base_skip"]["f1"], figures["retrained_skip"]["f1"]
    ok = base is not None and new is not None and base > 0 and new > base \
        and figures["activation"] == 200
    figures["rise_ok"] = ok
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if args.markdown:
        print("\n| version | setting | precision | recall | F1 | slots |")
        print("|---|---|---|---|---|---|")
        for label in ("base", "retrained"):
            for setting in SETTINGS:
                m = figures[f"{label}_{setting}"]
                print(f"| {label} | {setting} | {m['precision']} | {m['recall']} | {m['f1']} | "
                      f"{m['slots']} |")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
