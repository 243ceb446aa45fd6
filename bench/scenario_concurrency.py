"""Concurrency scenario: 8 client threads, two users sharing photo bytes, a mixed workload.

Each thread keeps one keep-alive connection and sends a random mix of: register a concept with
photos, add photos to a concept, delete a photo, delete a concept, caption a photo. Both users
draw their photos from the same small pool of bytes, so content-addressed files are shared
between concepts, users and captions while other requests delete them. Afterwards:

* every photo the API lists answers 200 (file and thumbnail): no lost files;
* the running app's index (``GET /api/admin/index/status``) equals the database;
* ``repic index verify`` and ``repic storage verify`` find nothing wrong (their services).

    .venv/bin/python bench/scenario_concurrency.py [--requests 200] [--threads 8] [--postgres URL]

``run_mix`` is also what ``tests/test_concurrency.py`` runs (bounded: a few hundred requests).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.utils.images import fixture_photo  # noqa: E402

SUBJECTS = ("dog", "cat")
RESETS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.ConnectError)


@dataclass
class MixReport:
    """What the scenario saw; ``problems`` lists every broken guarantee (empty when fine)."""

    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    by_action: Counter[str] = field(default_factory=Counter)
    resets: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    lost_files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def five_xx(self) -> int:
        return sum(n for code, n in self.statuses.items() if code >= 500)

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def markdown(self) -> str:
        codes = ", ".join(f"{c}: {n}" for c, n in sorted(self.statuses.items()))
        return "\n".join([
            "| requests | seconds | p50 ms | p95 ms | 5xx | resets | lost files | statuses |",
            "|---:|---:|---:|---:|---:|---:|---:|---|",
            f"| {self.requests} | {self.seconds:.1f} | {statistics.median(self.latencies_ms):.0f}"
            f" | {self.percentile(0.95):.0f} | {self.five_xx} | {self.resets}"
            f" | {len(self.lost_files)} | {codes} |",
        ])


def photo_pool(size: int = 6) -> list[bytes]:
    """``size`` real photos (DreamBooth fixtures); both users draw from the same bytes."""
    return [fixture_photo(SUBJECTS[i % len(SUBJECTS)], i // len(SUBJECTS)) for i in range(size)]


def register_user(url: str, username: str, password: str) -> dict[str, str]:
    httpx.post(f"{url}/api/auth/register", json={"username": username, "password": password})
    r = httpx.post(f"{url}/api/auth/token", data={"username": username, "password": password})
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


class _Client:
    """One thread's keep-alive connection; records every answer in the shared report."""

    def __init__(self, url: str, headers: dict[str, str], report: MixReport, lock: threading.Lock):
        self.http = httpx.Client(base_url=url, headers=headers, timeout=120)
        self.report = report
        self.lock = lock

    def call(self, action: str, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        began = time.perf_counter()
        try:
            r = self.http.request(method, path, **kwargs)
        except RESETS as exc:
            with self.lock:
                self.report.requests += 1
                self.report.resets += 1
                self.report.server_errors.append(f"{action}: connection {exc!r}")
            self.http.close()
            self.http = httpx.Client(
                base_url=self.http.base_url, headers=self.http.headers, timeout=120
            )
            return None
        with self.lock:
            self.report.requests += 1
            self.report.by_action[action] += 1
            self.report.statuses[r.status_code] += 1
            self.report.latencies_ms.append((time.perf_counter() - began) * 1000)
            if r.status_code >= 500:
                self.report.server_errors.append(f"{action}: {r.status_code} {r.text[:200]}")
        return r


def _concept_ids(client: _Client) -> list[dict[str, Any]]:
    r = client.call("list", "GET", "/api/concepts", params={"limit": 200})
    return r.json()["data"] if r is not None and r.status_code == 200 else []


def _one_request(client: _Client, rng: random.Random, pool: list[bytes], n: int) -> None:
    action = rng.choices(
        ["create", "add", "delete_photo", "delete_concept", "caption"], [3, 3, 2, 2, 1]
    )[0]
    def files(k: int) -> list[tuple[str, tuple[str, bytes, str]]]:
        return [
            ("images", (f"p{i}.jpg", pool[i], "image/jpeg"))
            for i in rng.sample(range(len(pool)), k)
        ]

    if action == "create":
        client.call("create", "POST", "/api/concepts",
                    data={"name": f"c{n}-{rng.randrange(10**6)}"}, files=files(rng.randint(1, 2)))
        return
    if action == "caption":
        photo = pool[rng.randrange(len(pool))]
        client.call("caption", "POST", "/api/captions", data={"max_new_tokens": "8"},
                    files={"image": ("q.jpg", photo, "image/jpeg")})
        return
    concepts = _concept_ids(client)
    if not concepts:
        return
    concept = rng.choice(concepts)
    cid = concept["id"]
    if action == "add":
        client.call("add", "POST", f"/api/concepts/{cid}/images", files=files(1))
    elif action == "delete_photo" and concept["images"]:
        image = rng.choice(concept["images"])
        client.call("delete_photo", "DELETE", f"/api/concepts/{cid}/images/{image['id']}")
    else:
        client.call("delete_concept", "DELETE", f"/api/concepts/{cid}")


def check_files(url: str, users: list[dict[str, str]], report: MixReport) -> None:
    """Every photo the API lists must be served (file and thumbnail)."""
    with httpx.Client(base_url=url, timeout=60) as http:
        for headers in users:
            concepts = http.get("/api/concepts", headers=headers, params={"limit": 200}).json()
            for concept in concepts["data"]:
                for image in concept["images"]:
                    for link in (image["url"], image["thumbnail_url"]):
                        r = http.get(link, headers=headers)
                        if r.status_code != 200:
                            report.lost_files.append(f"{link}: {r.status_code}")
            captions = http.get("/api/captions", headers=headers, params={"limit": 200}).json()
            for caption in captions["data"]:
                r = http.get(f"/api/captions/{caption['id']}/image", headers=headers)
                if r.status_code != 200:
                    report.lost_files.append(f"caption {caption['id']}: {r.status_code}")
    if report.lost_files:
        report.problems.append(f"{len(report.lost_files)} photos lost their file")


def run_mix(
    url: str,
    users: list[dict[str, str]],
    *,
    requests: int = 200,
    threads: int = 8,
    seed: int = 0,
) -> MixReport:
    """Send ``requests`` mixed requests from ``threads`` threads; check files afterwards."""
    report = MixReport()
    lock = threading.Lock()
    pool = photo_pool()
    counter = iter(range(requests))

    def worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        client = _Client(url, users[index % len(users)], report, lock)
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                break
            _one_request(client, rng, pool, n)
        client.http.close()

    began = time.perf_counter()
    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    report.seconds = time.perf_counter() - began
    if report.five_xx:
        report.problems.append(f"{report.five_xx} answers were 5xx: {report.server_errors[:5]}")
    if report.resets:
        report.problems.append(f"{report.resets} connections were reset")
    check_files(url, users, report)
    return report


def index_matches_database(url: str, admin: dict[str, str], database_vectors: dict[int, int]
                           ) -> list[str]:
    """Compare what the running app serves with the database's count per owner."""
    status = httpx.get(f"{url}/api/admin/index/status", headers=admin, timeout=30).json()
    served = {int(o["owner_id"]): int(o["vectors"]) for o in status["owners"]}
    served = {k: v for k, v in served.items() if v}
    expected = {k: v for k, v in database_vectors.items() if v}
    if served != expected:
        return [f"app index {served} != database {expected}"]
    return []


def main() -> None:  # pragma: no cover - a benchmark entry point
    from app.db import make_engine, make_session_factory
    from app.migrate import upgrade
    from app.services.index_audit import DatabaseIndex, check_files
    from app.services.users import create_admin
    from app.storage import ImageStore
    from tests.utils.server import LiveServer

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--postgres", default="", help="database URL (default: SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        settings = scenario_settings(data, args.postgres or f"sqlite:///{data}/repic.db")
        upgrade(settings.database.url)
        with make_session_factory(make_engine(settings.database.url))() as session:
            create_admin(session, "root", "root-password-1")
            session.commit()
        with LiveServer(settings) as server:
            users = [register_user(server.url, n, f"{n}-password-1") for n in ("anya", "ben")]
            report = run_mix(server.url, users, requests=args.requests, threads=args.threads)
            admin = register_user(server.url, "root", "root-password-1")
            with make_session_factory(make_engine(settings.database.url))() as session:
                db = DatabaseIndex.read(session)
                files, checked = check_files(session, ImageStore(settings.images_dir), 0)
            report.problems += index_matches_database(server.url, admin, db.vectors)
            report.problems += files
        print(report.markdown())
        print(f"\nindex: {sum(db.vectors.values())} vectors in the database; files checked: "
              f"{checked} (problems with index or files: {len(report.problems)})")
        for problem in report.problems:
            print("PROBLEM:", problem)


def scenario_settings(data: Path, database_url: str) -> Any:
    """The test suite's configuration: tiny models built into ``data``, cheap hashing."""
    from app.ml.tiny import build_tiny_models
    from app.settings import Settings

    models = data / "tiny-models"
    build_tiny_models(models)
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        storage={"data_dir": data / "data"},
        database={"url": database_url},
        tiny_models_dir=models,
        embedder={"model_name": "local-dir:" + str(models / "clip"), "pretrained": ""},
        detector={"kind": "none"},
        auth={"argon2_time_cost": 1, "argon2_memory_kib": 1024},
        caption={"backend": "inprocess", "model": str(models / "vlm"), "min_pixels": 28 * 28,
                 "max_pixels": 112 * 112, "max_new_tokens": 16},
    )


if __name__ == "__main__":
    main()
