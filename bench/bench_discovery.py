"""Concept discovery's purity (issue #17 item 6): on a library where one subject was never
registered, does the discovery job propose a cluster made mostly of that subject?

For each held-out subject S: a fresh owner registers every other subject as a concept (its
first two photos as references), imports every photo of every subject into their library,
and runs discovery (the service's real path: crops, embeddings, the known-concept filter at
the owner's calibrated retrieval threshold, HDBSCAN, suggestions). The suggestion holding the
most photos of S is scored: purity (share of its photos that are S), recall (share of S's
photos in it); "found" means purity > 0.5 and recall >= 0.5. Other suggestions are clusters
that should not be there (photos of registered subjects the filter let through, or mixtures).

Embedders (``--embedders``):

* ``tiny``: the tiny random-weight CLIP the tests use (64-d);
* ``vit-b-32-random``: open_clip ViT-B-32 at its real size with random weights (a seeded
  checkpoint written here: no download). Random weights carry no meaning: expect chance;
* ``colour``: the mean-colour embedder of the tests (``tests/support/color_embedder.py``) on
  DreamBooth, and ``colour-synthetic``: the same embedder on photos of one colour per subject
  (the case where the embedding separates subjects: the clustering path should reach 1.0).

    .venv/bin/python bench/bench_discovery.py
        [--embedders tiny,vit-b-32-random,colour,colour-synthetic]
        [--min-cluster-size 3] [--held-out 0] [--registered 3] [--markdown]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
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
#: Photos of each subject that become the references of its concept when it is registered.
REFERENCES = 2


@dataclass
class Outcome:
    subject: str
    photos: int
    purity: float
    recall: float
    suggestions: int
    seconds: float
    #: Crops that matched no registered concept (out of ``crops``), and the threshold used.
    unknown: int = 0
    crops: int = 0
    threshold: float = 0.0

    @property
    def found(self) -> bool:
        return self.purity > 0.5 and self.recall >= 0.5


def dreambooth_subjects() -> dict[str, list[bytes]]:
    root = SHARED if SHARED.is_dir() else FIXTURES
    return {d.name: [p.read_bytes() for p in sorted(d.glob("*.jpg"))]
            for d in sorted(root.iterdir()) if d.is_dir() and any(d.glob("*.jpg"))}


def colour_subjects(count: int = 8, photos: int = 7) -> dict[str, list[bytes]]:
    """``count`` subjects, each ``photos`` photos of one hue in slightly different shades."""
    import colorsys

    subjects: dict[str, list[bytes]] = {}
    for s in range(count):
        r, g, b = colorsys.hsv_to_rgb(s / count, 0.8, 0.85)
        shots = []
        for i in range(photos):
            jitter = ((i * 7) % 11 - 5, (i * 5) % 9 - 4, (i * 3) % 7 - 3)
            colour = tuple(max(0, min(255, int(255 * c) + 2 * j))
                           for c, j in zip((r, g, b), jitter, strict=True))
            buf = io.BytesIO()
            Image.new("RGB", (96, 72), colour).save(buf, "PNG")
            shots.append(buf.getvalue())
        subjects[f"hue{s}"] = shots
    return subjects


def make_embedder(kind: str, tiny: Path) -> Any:
    from app.ml.embedder import ClipEmbedder
    from tests.support.color_embedder import ColorEmbedder

    if kind == "tiny":
        return ClipEmbedder("local-dir:" + str(tiny / "clip"), None)
    if kind == "vit-b-32-random":
        # The embedder serves no random weights on its own: write a seeded random checkpoint.
        import open_clip
        import torch

        weights = tiny.parent / "vit-b-32-random.pt"
        if not weights.exists():
            torch.manual_seed(0)
            model = open_clip.create_model("ViT-B-32", pretrained=None)
            torch.save(model.state_dict(), weights)
        return ClipEmbedder("ViT-B-32", str(weights))
    if kind in ("colour", "colour-synthetic"):
        return ColorEmbedder()
    raise SystemExit(f"unknown embedder {kind!r}")


class Bench:
    """One embedder's service objects (database, index, retrieval, discovery) in ``work``."""

    def __init__(self, kind: str, subjects: dict[str, list[bytes]], tiny: Path,
                 min_cluster_size: int, work: Path) -> None:
        from app.migrate import upgrade
        from app.ml.detector import NoDetector
        from app.models import IndexRevision
        from app.services.concepts import ConceptService
        from app.services.index_sync import IndexSync
        from app.services.library_discovery import LibraryDiscovery
        from app.services.retrieval import RetrievalService
        from app.settings import LibrarySettings, RetrievalSettings, Settings
        from app.wiring import build_container

        self.subjects, self.work = subjects, work
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            storage={"data_dir": work / "data"},
            tiny_models_dir=tiny,
            detector={"kind": "none"},
            auth={"argon2_time_cost": 1, "argon2_memory_kib": 1024},
        )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings.database_url)
        self.container = build_container(settings)  # database, store, jobs: no model loaded
        embedder = make_embedder(kind, tiny)
        embedder.load()
        with self.container.session_factory() as session:
            row = session.get(IndexRevision, 1) or IndexRevision(id=1, revision=0)
            row.embedder_id, row.embedder_spec = embedder.model_id, {}  # this embedder serves
            session.add(row)
            session.commit()
        retrieval_settings = RetrievalSettings()  # calibrated thresholds, as in production
        self.index = IndexSync(embedder, retrieval_settings, self.container.session_factory,
                               self.container.store, settings.index_dir)
        self.index.start()
        self.retrieval = RetrievalService(self.index, NoDetector(), retrieval_settings)
        self.concepts = ConceptService(self.container.store, self.container.concepts.limits,
                                       hooks=self.index)
        self.discovery = LibraryDiscovery(
            self.container.session_factory, self.container.store,
            LibrarySettings(discovery_min_cluster_size=min_cluster_size), settings.storage,
            self.container.jobs, lambda: self.retrieval, self.concepts,
            self.container.library_captions,
        )
        self.owners = 0

    def close(self) -> None:
        self.index.close()
        self.container.close()

    def library(self, registered: list[str], photographed: list[str]) -> tuple[
            list[list[str]], Any, float, float]:
        """A fresh owner with ``registered`` as concepts and the photos of ``photographed``
        in their library, after one discovery: each suggestion's photos (as subject names),
        the discovery report, the owner's threshold and the seconds it all took."""
        from sqlalchemy import select

        from app.db import session_scope
        from app.models import ConceptSuggestion, LibraryPhoto
        from app.services.concepts import Upload
        from app.services.users import register

        began = time.perf_counter()
        self.owners += 1
        with session_scope(self.container.session_factory) as session:
            owner = register(session, f"owner{self.owners}", "correct horse battery")
        with self.container.session_factory() as session:
            for subject in registered:
                uploads = [Upload(d, f"{subject}{i}.jpg", "") for i, d in
                           enumerate(self.subjects[subject][:REFERENCES])]
                self.concepts.create(session, owner, name=subject, uploads=uploads)
        folder = self.work / f"library{self.owners}"
        for subject in photographed:
            (folder / subject).mkdir(parents=True)
            for i, data in enumerate(self.subjects[subject]):
                (folder / subject / f"{i:02d}.jpg").write_bytes(data)
        _import(self.container, owner, folder)
        report, _ = self.discovery.discover(owner.id)
        with self.container.session_factory() as session:
            threshold = self.retrieval.threshold(session, owner).value
            album = {int(i): str(a) for i, a in session.execute(
                select(LibraryPhoto.id, LibraryPhoto.album)
                .where(LibraryPhoto.owner_id == owner.id))}
            rows = list(session.scalars(select(ConceptSuggestion).where(
                ConceptSuggestion.owner_id == owner.id, ConceptSuggestion.state == "open")))
            members = [[album[p.photo_id] for p in s.photos] for s in rows]
        return members, report, threshold, time.perf_counter() - began


def held_out(bench: Bench, names: list[str], registered: int) -> list[Outcome]:
    """Each subject in turn never registered, beside ``registered`` registered ones (0: all
    the others), in a library of their photos."""
    everyone = list(bench.subjects)
    outcomes = []
    for target in names:
        others = [s for s in everyone if s != target]
        if registered:
            start = everyone.index(target)
            others = [everyone[(start + 1 + i) % len(everyone)] for i in range(registered)]
        members, report, threshold, seconds = bench.library(others, [target, *others])
        outcome = score(target, len(bench.subjects[target]), members, seconds)
        outcome.unknown, outcome.crops = report.crops - report.known, report.crops
        outcome.threshold = threshold
        outcomes.append(outcome)
    return outcomes


def none_registered(bench: Bench) -> dict[str, Any]:
    """Every subject's photos, no concept: what the clusters are made of."""
    members, report, threshold, seconds = bench.library([], list(bench.subjects))
    purities = [Counter(m).most_common(1)[0][1] / len(m) for m in members]
    recovered = {Counter(m).most_common(1)[0][0] for m in members
                 if Counter(m).most_common(1)[0][1] / len(m) > 0.5}
    found = sum(1 for s in recovered
                if max(m.count(s) for m in members) >= 0.5 * len(bench.subjects[s]))
    return {"libraries": 1, "found": found, "of": len(bench.subjects),
            "purity": statistics.mean(purities) if purities else 0.0,
            "recall": None, "suggestions": len(members),
            "unknown": report.crops - report.known, "crops": report.crops,
            "threshold": threshold, "seconds": seconds}


def _import(container: Any, owner: Any, folder: Path) -> None:
    from app.services.job_kinds import JobKind

    with container.session_factory() as session:
        job = container.jobs.create_unsent(
            session, JobKind.LIBRARY_IMPORT, container.library_imports.folder_params(owner, folder),
            owner)
    container.job_runtime.execute(job.id, None, "bench")


def score(target: str, photos: int, suggestions: list[list[str]], seconds: float) -> Outcome:
    best = max(suggestions, key=lambda s: (s.count(target), s.count(target) / len(s)),
               default=[])
    hits = best.count(target)
    return Outcome(target, photos, hits / len(best) if best else 0.0, hits / photos,
                   len(suggestions), seconds)


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    return {
        "libraries": len(outcomes),
        "found": sum(o.found for o in outcomes),
        "of": len(outcomes),
        "purity": statistics.mean(o.purity for o in outcomes),
        "recall": statistics.mean(o.recall for o in outcomes),
        "suggestions": statistics.mean(o.suggestions for o in outcomes),
        "unknown": statistics.mean(o.unknown for o in outcomes),
        "crops": statistics.mean(o.crops for o in outcomes),
        "threshold": statistics.mean(o.threshold for o in outcomes),
        "seconds": statistics.mean(o.seconds for o in outcomes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedders", default="tiny,vit-b-32-random,colour,colour-synthetic")
    parser.add_argument("--min-cluster-size", type=int, default=3,
                        help="DreamBooth has 4-6 photos a subject (the service default is 5).")
    parser.add_argument("--held-out", type=int, default=0,
                        help="Held-out subjects tried per embedder (0: every subject).")
    parser.add_argument("--registered", type=int, default=3,
                        help="Registered subjects beside the held-out one in the small library.")
    parser.add_argument("--markdown", action="store_true", help="Print a docs/benchmarks.md table.")
    args = parser.parse_args()

    from app.ml.tiny import build_tiny_models

    rows: list[tuple[str, str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="repic-bench-discovery-") as tmp:
        root = Path(tmp)
        tiny = root / "tiny"
        build_tiny_models(tiny)
        for kind in args.embedders.split(","):
            subjects = colour_subjects() if kind == "colour-synthetic" else dreambooth_subjects()
            names = list(subjects)[: args.held_out] if args.held_out else list(subjects)
            bench = Bench(kind, subjects, tiny, args.min_cluster_size, root / kind)
            try:
                small = f"{args.registered} registered + 1 never"
                for label, registered in ((small, args.registered),
                                          ("all others registered + 1 never", 0)):
                    outcomes = held_out(bench, names, registered)
                    for o in outcomes:
                        print(f"{kind} [{label}] {o.subject}: purity {o.purity:.2f}, recall "
                              f"{o.recall:.2f}, {o.suggestions} suggestion(s), {o.unknown}/"
                              f"{o.crops} crops unknown at threshold {o.threshold:.3f}, "
                              f"{o.seconds:.1f} s", flush=True)
                    rows.append((kind, label, summary(outcomes)))
                rows.append((kind, "none registered", none_registered(bench)))
            finally:
                bench.close()
    total = sum(len(v) for v in dreambooth_subjects().values())
    print(f"\n# {len(dreambooth_subjects())} DreamBooth subjects, {total} photos; "
          f"min_cluster_size {args.min_cluster_size}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    for kind, label, row in rows:
        print(kind, label, row)
    if args.markdown:
        print("\n| embedder | library | libraries | subjects found | mean purity | mean recall | "
              "suggestions per library | crops left unknown | threshold | s per library |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for kind, label, r in rows:
            recall = "–" if r["recall"] is None else f"{r['recall']:.2f}"
            print(f"| {kind} | {label} | {r['libraries']} | {r['found']} of {r['of']} | "
                  f"{r['purity']:.2f} | {recall} | {r['suggestions']:.1f} | "
                  f"{r['unknown']:.0f} of {r['crops']:.0f} | {r['threshold']:.3f} | "
                  f"{r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
