"""Caption throughput through the app vs the caption server's own, and in-process stage latency.

Part 1 (the app adds no serialization): a local OpenAI-compatible server with a fixed latency
(tests/support/fake_vllm.py) is measured twice in the same run, with the same number of
concurrent clients:
  * baseline: clients call the server's /v1/chat/completions directly (its own throughput);
  * app: clients call the real app (uvicorn subprocess, openai backend -> that server) with
    POST /api/captions (upload, validation, retrieval with the tiny CLIP, prompt, DB rows).
The ratio app/baseline is the figure of merit (goal >= 0.9). The server runs in its own process
and the baseline sends it the very body the app sends (same images), so both sides give the
server the same work.

Part 2: per-stage latency (retrieve, generate, total) of the in-process path with the tiny VLM.

    .venv/bin/python bench/bench_captions.py [--clients 32] [--requests 256] [--latency 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.utils.images import fixture_photo  # noqa: E402
from tests.utils.server import LiveServer  # noqa: E402


async def _drive(n_requests: int, clients: int, call) -> float:  # type: ignore[no-untyped-def]
    """Run ``n_requests`` calls with ``clients`` concurrent workers; return requests/s."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n_requests):
        queue.put_nowait(i)
    errors: list[str] = []

    async def worker() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                await call(i)
            except Exception as exc:  # counted, reported
                errors.append(repr(exc))

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    return n_requests / elapsed


class ServerProcess:
    """The fake caption server in its own process, so it never competes with the bench's GIL."""

    def __init__(self, latency: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.fake_vllm", "--latency", str(latency)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.base_url = self.proc.stdout.readline().strip()
        self.model = "base-model"

    def __enter__(self) -> ServerProcess:
        return self

    def max_in_flight_since_start(self) -> int:
        """Stop the server and read the most requests it ever had in flight at once."""
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return int(json.loads(out.strip().splitlines()[-1])["max_in_flight"])

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def realistic_payload(model: str) -> dict:
    """The exact chat body the app sends for the bench's request (1 pinned demo + query)."""
    import io

    from PIL import Image

    from app.ml.backends.base import CaptionRequest, GenerationParams
    from app.ml.backends.openai_compat import OpenAICompatBackend
    from app.ml.prompt import Demonstration, build_caption_prompt

    def img(data: bytes) -> Image.Image:
        return Image.open(io.BytesIO(data)).convert("RGB")

    prompt = build_caption_prompt(
        [Demonstration("bo", "dog", img(fixture_photo("dog", 0)))],
        img(fixture_photo("dog", 2)),
        "Give a caption of the image.",
    )
    backend = OpenAICompatBackend(
        ["http://unused"], model=model, min_pixels=28 * 28, max_pixels=112 * 112
    )
    request = CaptionRequest(
        prompt.messages, prompt.images, params=GenerationParams(max_new_tokens=16)
    )
    return backend.build_payload(request, backend._encode_images(request))


async def baseline(server: ServerProcess, n: int, clients: int) -> float:
    limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients * 2)
    async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=60) as client:
        body = realistic_payload(server.model)

        async def call(_: int) -> None:
            r = await client.post("/v1/chat/completions", json=body)
            r.raise_for_status()

        return await _drive(n, clients, call)


async def through_app(
    url: str, headers: dict[str, str], concept_id: int, n: int, clients: int
) -> float:
    photo = fixture_photo("dog", 2)
    limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients * 2)
    async with httpx.AsyncClient(
        base_url=url, limits=limits, timeout=120, headers=headers
    ) as client:

        async def call(i: int) -> None:
            r = await client.post(
                "/api/captions",
                files={"image": (f"q{i}.jpg", photo, "image/jpeg")},
                data={"concept_ids": str(concept_id), "max_new_tokens": "16"},
            )
            if r.status_code != 201:
                raise RuntimeError(f"{r.status_code} {r.text[:200]}")

        return await _drive(n, clients, call)


def _settings(data_dir: Path, tiny: Path, **caption: object):  # type: ignore[no-untyped-def]
    from app.settings import Settings

    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        storage={"data_dir": data_dir},
        tiny_models_dir=tiny,
        embedder={"model_name": f"local-dir:{tiny / 'clip'}", "pretrained": ""},
        detector={"kind": "none"},
        caption={"min_pixels": 28 * 28, "max_pixels": 112 * 112, "max_new_tokens": 16, **caption},
        auth={"argon2_time_cost": 1, "argon2_memory_kib": 1024},
    )


def app_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of the app process and its uvicorn worker children."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        times = proc.cpu_times()
        total += times.user + times.system
    return total


def part_throughput(
    tmp: Path, tiny: Path, clients: int, n: int, latency: float, workers: int = 1
) -> dict:
    from app.migrate import upgrade

    # Two identical server processes: one measured alone, one behind the app, so the second
    # one's in-flight high-water mark describes the app's traffic only.
    with ServerProcess(latency) as server, ServerProcess(latency) as app_server:
        settings = _settings(
            tmp / "app",
            tiny,
            backend="openai",
            openai_base_urls=[app_server.base_url],
            model=app_server.model,
        )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings.database_url)
        with LiveServer(
            settings, log_path=Path(tempfile.gettempdir()) / "bench-app.log", workers=workers
        ) as app:
            with httpx.Client(base_url=app.url, timeout=60) as c:
                c.post("/api/auth/register", json={"username": "bench", "password": "benchbench"})
                token = c.post(
                    "/api/auth/token", data={"username": "bench", "password": "benchbench"}
                ).json()
                headers = {"Authorization": f"Bearer {token['access_token']}"}
                created = c.post(
                    "/api/concepts",
                    headers=headers,
                    data={"name": "bo", "category": "dog"},
                    files=[("images", ("a.jpg", fixture_photo("dog", 0), "image/jpeg"))],
                ).json()
            asyncio.run(baseline(server, clients, clients))  # warm-up
            asyncio.run(through_app(app.url, headers, created["id"], clients, clients))
            base_rps = asyncio.run(baseline(server, n, clients))
            cpu_before = app_cpu_seconds(app.proc.pid)
            app_rps = asyncio.run(through_app(app.url, headers, created["id"], n, clients))
            app_cpu_ms = (app_cpu_seconds(app.proc.pid) - cpu_before) / n * 1000
            base_rps2 = asyncio.run(baseline(server, n, clients))
        in_flight = app_server.max_in_flight_since_start()
    base = (base_rps + base_rps2) / 2
    return {
        "baseline_rps": base,
        "app_rps": app_rps,
        "ratio": app_rps / base,
        "ideal_rps": clients / latency,
        "app_cpu_ms": app_cpu_ms,
        "in_flight": in_flight,
    }


def part_stages(tmp: Path, tiny: Path, runs: int) -> dict:
    from app.migrate import upgrade
    from app.model_services import ModelLoading
    from app.services.concepts import Upload
    from app.services.users import register
    from app.storage import validate_image
    from app.wiring import build_container

    settings = _settings(tmp / "inproc", tiny, backend="inprocess", model=str(tiny / "vlm"))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    container = build_container(settings, ModelLoading.ALL)
    service = container.models.captions()
    with container.session_factory() as session:
        user = register(session, "bench", "benchbench")
        session.commit()
        container.concepts.create(
            session,
            user,
            name="bo",
            category="dog",
            uploads=[
                Upload(fixture_photo("dog", 0), "a.jpg", "image/jpeg"),
                Upload(fixture_photo("dog", 1), "b.jpg", "image/jpeg"),
            ],
        )
    photo = validate_image(
        fixture_photo("dog", 2), "q.jpg", "image/jpeg", max_bytes=10**8, max_pixels=10**8
    )
    stages: dict[str, list[float]] = {"retrieve": [], "generate": [], "total": []}

    async def run() -> None:
        for _ in range(runs):
            outcome = await service.caption(user, photo)
            for key in stages:
                stages[key].append(outcome.timings_ms[key])

    asyncio.run(run())
    container.close()
    return {
        k: (statistics.median(v), sorted(v)[int(0.95 * (len(v) - 1))]) for k, v in stages.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--latency", type=float, default=0.5, help="server latency, seconds")
    parser.add_argument("--stage-runs", type=int, default=30)
    parser.add_argument("--workers", default="1,2", help="uvicorn worker counts to measure")
    args = parser.parse_args()
    from app.ml.tiny import build_tiny_models

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        tiny = tmp / "tiny"
        build_tiny_models(tiny)
        runs = []
        for i, workers in enumerate(int(w) for w in args.workers.split(",")):
            runs.append(
                (
                    workers,
                    part_throughput(
                        tmp / f"w{i}", tiny, args.clients, args.requests, args.latency, workers
                    ),
                )
            )
        s = part_stages(tmp, tiny, args.stage_runs)
    print("## Captions (bench/bench_captions.py)\n")
    print(
        f"{time.strftime('%Y-%m-%d')}, 2-core CPU, `python bench/bench_captions.py "
        f"--clients {args.clients} --requests {args.requests} --latency {args.latency}`\n"
    )
    print(
        "| app processes (uvicorn workers) | caption server alone, req/s | through the app "
        "(POST /api/captions), req/s | ratio | app CPU per request | most requests in flight "
        "at the server |"
    )
    print("|---|---|---|---|---|---|")
    for workers, t in runs:
        print(
            f"| {workers} | {t['baseline_rps']:.1f} | {t['app_rps']:.1f} | **{t['ratio']:.2f}** "
            f"| {t['app_cpu_ms']:.1f} ms | {t['in_flight']} |"
        )
    print(
        f"\nIdeal: {args.clients} clients / {args.latency} s = "
        f"{args.clients / args.latency:.1f} req/s.\n"
    )
    print("In-process path, tiny VLM (16 new tokens), milliseconds:\n")
    print("| stage | p50 | p95 |")
    print("|---|---|---|")
    for key, (p50, p95) in s.items():
        print(f"| {key} | {p50:.1f} | {p95:.1f} |")


if __name__ == "__main__":
    main()
