"""Importing and captioning a photo library of N photos with the tiny models (issue #17's load
check): the time and throughput of each job (and of importing the same folder again, which
skips every photo as a duplicate), and whether progress was shown throughout.

The photos are variants of the DreamBooth photos (../shared/data/dreambooth, else the test
fixtures): each a different crop and size, so every one has its own content hash and is
imported. Both jobs run as a worker runs them (job rows, the job runtime, heartbeat, progress
reports) in this process, on a SQLite database in a temporary data directory; a watcher reads
the job row every 0.5 s, as the pages do, and records what it saw.

    .venv/bin/python bench/bench_library.py [--photos 1000] [--concepts 4] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from PIL import Image  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "dreambooth"
FIXTURES = ROOT / "tests" / "fixtures" / "dreambooth"


def sources() -> list[Path]:
    root = SHARED if SHARED.is_dir() else FIXTURES
    return sorted(root.glob("*/*.jpg"))


def make_library(folder: Path, count: int, seed: int = 0) -> int:
    """``count`` distinct JPEGs in one album per source subject; returns the bytes written."""
    rng = random.Random(seed)
    photos = sources()
    written = 0
    for i in range(count):
        source = photos[i % len(photos)]
        with Image.open(source) as img:
            rgb = img.convert("RGB")
        w, h = rgb.size
        left, top = rng.randint(0, w // 5), rng.randint(0, h // 5)
        crop = rgb.crop((left, top, w - rng.randint(0, w // 5), h - rng.randint(0, h // 5)))
        side = rng.randint(160, 320)
        crop.thumbnail((side, side))
        album = folder / source.parent.name
        album.mkdir(parents=True, exist_ok=True)
        target = album / f"{source.stem}-{i:05d}.jpg"
        crop.save(target, "JPEG", quality=85)
        written += target.stat().st_size
    return written


class Watcher(threading.Thread):
    """Reads a job's row every ``period`` seconds (as the job pages poll it)."""

    def __init__(self, container: Any, job_id: int, period: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.container, self.job_id, self.period = container, job_id, period
        self.seen: list[tuple[float, int, float | None]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        from app.models import Job

        began = time.monotonic()
        while not self.halt.wait(self.period):
            with self.container.session_factory() as session:
                job = session.get(Job, self.job_id)
                if job is not None and job.state == "running":
                    self.seen.append((time.monotonic() - began, job.step, job.eta_s))

    def summary(self) -> dict[str, Any]:
        steps = [s for _, s, _ in self.seen]
        # The longest time the row showed no new step while the job ran.
        longest, last_change, last_step = 0.0, 0.0, None
        for at, step, _ in self.seen:
            if step != last_step:
                longest, last_change, last_step = max(longest, at - last_change), at, step
        return {"reads": len(self.seen), "distinct_steps": len(set(steps)),
                "eta_reported": sum(1 for *_, eta in self.seen if eta is not None),
                "longest_without_progress_s": round(longest, 2)}


def run_job(container: Any, job: Any) -> tuple[Any, float, dict[str, Any]]:
    from app.models import Job

    watcher = Watcher(container, job.id)
    watcher.start()
    began = time.perf_counter()
    container.job_runtime.execute(job.id, None, "bench")
    elapsed = time.perf_counter() - began
    watcher.halt.set()
    watcher.join()
    with container.session_factory() as session:
        return session.get(Job, job.id), elapsed, watcher.summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--concepts", type=int, default=4,
                        help="Concepts registered first (2 photos each), found by retrieval.")
    parser.add_argument("--markdown", action="store_true", help="Print a docs/benchmarks.md table.")
    args = parser.parse_args()

    from app.db import session_scope
    from app.ml.tiny import build_tiny_models
    from app.model_services import ModelLoading
    from app.services.concepts import Upload
    from app.services.job_kinds import JobKind
    from app.services.library_captions import CaptionSelection
    from app.services.users import register
    from app.settings import Settings
    from app.wiring import build_container

    with tempfile.TemporaryDirectory(prefix="repic-bench-library-") as tmp:
        root = Path(tmp)
        began = time.perf_counter()
        size = make_library(root / "photos", args.photos)
        made_s = time.perf_counter() - began
        tiny = root / "tiny"
        build_tiny_models(tiny)
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            storage={"data_dir": root / "data"},
            tiny_models_dir=tiny,
            embedder={"model_name": "local-dir:" + str(tiny / "clip"), "pretrained": ""},
            detector={"kind": "none"},
            retrieval={"min_score": 0.0},
            caption={"backend": "inprocess", "model": str(tiny / "vlm"), "min_pixels": 28 * 28,
                     "max_pixels": 112 * 112, "max_new_tokens": 16},
            auth={"argon2_time_cost": 1, "argon2_memory_kib": 1024},
        )
        from app.migrate import upgrade

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings.database_url)
        container = build_container(settings, ModelLoading.ALL)
        try:
            with session_scope(container.session_factory) as session:
                owner = register(session, "bench", "correct horse battery")
            subjects = sorted({p.parent for p in sources()})[: args.concepts]
            with container.session_factory() as session:
                for subject in subjects:
                    uploads = [Upload(p.read_bytes(), p.name, "image/jpeg")
                               for p in sorted(subject.glob("*.jpg"))[:2]]
                    container.concepts.create(session, owner, name=subject.name, uploads=uploads)
                params = container.library_imports.folder_params(owner, root / "photos")
                job = container.jobs.create_unsent(session, JobKind.LIBRARY_IMPORT, params, owner)
            imported, import_s, import_watch = run_job(container, job)
            with container.session_factory() as session:  # the same folder again: resuming
                job = container.jobs.create_unsent(session, JobKind.LIBRARY_IMPORT, params, owner)
            again, again_s, again_watch = run_job(container, job)
            with container.session_factory() as session:
                job = container.library_captions.create_unsent(session, owner, CaptionSelection())
            captioned, caption_s, caption_watch = run_job(container, job)
        finally:
            container.close()

    n = args.photos
    rows = [
        ("import", import_s, imported.result.get("imported"), imported.state, import_watch),
        ("import again (all duplicates)", again_s,
         again.result.get("skipped_by_reason", {}).get("duplicate"), again.state, again_watch),
        ("caption", caption_s, captioned.result.get("captioned"), captioned.state,
         caption_watch),
    ]
    print(f"# {n} photos ({size / 1e6:.1f} MB, made in {made_s:.1f} s), "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    for name, seconds, done, state, watch in rows:
        print(f"{name}: {state}, {done}/{n} in {seconds:.1f} s = {n / seconds:.1f} photos/s; "
              f"progress: {watch}")
    if args.markdown:
        print("\n| job | photos done | time (s) | photos/s | row reads while running | "
              "distinct steps seen | longest with no new step (s) |")
        print("|---|---|---|---|---|---|---|")
        for name, seconds, done, _, watch in rows:
            print(f"| {name} | {done}/{n} | {seconds:.1f} | {n / seconds:.1f} | "
                  f"{watch['reads']} | {watch['distinct_steps']} | "
                  f"{watch['longest_without_progress_s']} |")


if __name__ == "__main__":
    main()
