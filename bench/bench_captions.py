"""Caption throughput through the app vs the caption server's own, app CPU per request by stage,
and in-process stage latency.

Part 1 (the app adds no serialization, and little CPU): a local OpenAI-compatible server with a
fixed latency (tests/support/fake_vllm.py) is measured twice in the same run, with the same
number of concurrent clients:
  * baseline: clients call the server's /v1/chat/completions directly (its own throughput);
  * app: clients call the real app (uvicorn subprocess, 1 and 2 workers, openai backend -> that
    server) with POST /api/captions (upload, validation, retrieval with the tiny CLIP, prompt,
    DB rows).
The ratio app/baseline is the throughput figure of merit. The server runs in its own process
and the baseline sends it the very body the app sends (same images), so both sides give the
server the same work. The app's CPU per request (every process and thread of it) is measured
over the app run, and so is, inside the app processes, the CPU of the embedder's forward
passes (the goal leaves them out: <= 10 ms per request without them).

Part 2: where that CPU goes. One app process runs under cProfile (every thread, each on its own
CPU clock) for a second app run; each function's own time is put in a stage (multipart parse,
decode/resize, base64/encode, DB, file write, JSON, retrieval search, model call, forward pass,
HTTP server/framework, ...) by :data:`STAGES`' rules.

Part 3: per-stage latency (retrieve, generate, total) of the in-process path with the tiny VLM.

    .venv/bin/python bench/bench_captions.py [--clients 32] [--requests 256] [--latency 0.5]
        [--workers 1,2] [--profile-requests 128]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


#: Per-request CPU stages of the app, in the order the breakdown lists them. Each profiled
#: function's own CPU time (cProfile's tottime, timer: the thread's CPU clock) goes to the
#: first stage whose rule matches it; a function no rule names (a builtin, a generic stdlib
#: helper) is charged to its callers' stages in proportion to the time each call spent in it.
STAGES = (
    "multipart parse",
    "decode/resize",
    "base64/encode",
    "DB reads + writes",
    "file write+fsync",
    "JSON",
    "retrieval search",
    "model call (HTTP client to the caption server)",
    "embedder/detector forward (excluded from the goal)",
    "HTTP server, routing, auth, middleware",
    "caption service logic, prompt, logging, metrics",
    "other",
)

# (stage, substring of the file path, function-name prefix or None); first match wins. anyio,
# asyncio and sniffio serve both the server and the HTTP client: their callers decide.
_RULES: tuple[tuple[str, str, str | None], ...] = (
    ("base64/encode", "/PIL/", "save"),
    ("base64/encode", "/PIL/", "_save"),
    ("base64/encode", "/PIL/JpegImagePlugin.py", "get_sampling"),
    ("base64/encode", "/app/ml/images.py", "to_data_url"),
    ("base64/encode", "/app/ml/backends/openai_compat.py", "_encode"),
    ("base64/encode", "/app/ml/backends/openai_compat.py", "_source_data_url"),
    ("base64/encode", "/base64.py", None),
    ("base64/encode", "/app/storage.py", "_encode"),
    ("decode/resize", "/PIL/", None),
    ("decode/resize", "/pillow_heif/", None),
    ("decode/resize", "/app/ml/images.py", None),
    ("decode/resize", "/torchvision/transforms/", None),
    ("decode/resize", "/open_clip/transform.py", None),
    ("decode/resize", "/app/storage.py", "validate_image"),
    ("decode/resize", "/app/storage.py", "open"),
    ("decode/resize", "/app/storage.py", "_stored_format"),
    ("decode/resize", "/app/services/captions.py", "_open"),
    ("multipart parse", "/python_multipart/", None),
    ("multipart parse", "/multipart/", None),
    ("multipart parse", "/starlette/formparsers.py", None),
    ("multipart parse", "/starlette/datastructures.py", None),
    ("multipart parse", "/app/api/uploads.py", None),
    ("multipart parse", "/tempfile.py", "write"),
    ("multipart parse", "/tempfile.py", "read"),
    ("multipart parse", "/tempfile.py", "seek"),
    ("multipart parse", "/tempfile.py", "rollover"),
    ("file write+fsync", "/app/storage.py", None),
    ("file write+fsync", "/tempfile.py", None),
    ("DB reads + writes", "/sqlalchemy/", None),
    ("DB reads + writes", "/psycopg/", None),
    ("DB reads + writes", "/psycopg_pool/", None),
    ("DB reads + writes", "/sqlite3/", None),
    ("DB reads + writes", "/app/db.py", None),
    ("DB reads + writes", "/app/models.py", None),
    ("JSON", "/json/", None),
    ("JSON", "/httpx/_content.py", "encode_json"),
    ("JSON", "/httpx/_models.py", "json"),
    ("JSON", "/httpx2/_content.py", "encode_json"),
    ("JSON", "/httpx2/_models.py", "json"),
    ("JSON", "/pydantic/", None),
    ("JSON", "/pydantic_core/", None),
    ("JSON", "/fastapi/encoders.py", None),
    ("JSON", "/fastapi/routing.py", "serialize_response"),
    ("JSON", "/fastapi/routing.py", "_prepare_response_content"),
    ("JSON", "/starlette/responses.py", "render"),
    ("retrieval search", "/app/services/retrieval.py", None),
    ("retrieval search", "/app/services/index_sync.py", None),
    ("retrieval search", "/app/services/index_cache.py", None),
    ("retrieval search", "/app/services/concept_quality.py", None),
    ("retrieval search", "/app/services/concept_shares.py", None),
    ("retrieval search", "/app/services/embeddings.py", None),
    ("retrieval search", "/app/ml/vector_store.py", None),
    ("retrieval search", "/app/ml/embedder.py", None),
    ("retrieval search", "/app/ml/detector.py", None),
    ("retrieval search", "/faiss/", None),
    ("retrieval search", "/numpy/", None),
    ("embedder/detector forward (excluded from the goal)", "/torch/", None),
    ("embedder/detector forward (excluded from the goal)", "/open_clip/", None),
    ("embedder/detector forward (excluded from the goal)", "/app/ml/tiny_clip.py", None),
    ("embedder/detector forward (excluded from the goal)", "/transformers/", None),
    ("model call (HTTP client to the caption server)", "/httpx/", None),
    ("model call (HTTP client to the caption server)", "/httpcore/", None),
    ("model call (HTTP client to the caption server)", "/httpx2/", None),
    ("model call (HTTP client to the caption server)", "/httpcore2/", None),
    ("model call (HTTP client to the caption server)", "/h11/", None),
    ("model call (HTTP client to the caption server)", "/app/ml/backends/", None),
    ("HTTP server, routing, auth, middleware", "/uvicorn/", None),
    ("HTTP server, routing, auth, middleware", "/httptools/", None),
    ("HTTP server, routing, auth, middleware", "/uvloop/", None),
    ("HTTP server, routing, auth, middleware", "/starlette/", None),
    ("HTTP server, routing, auth, middleware", "/fastapi/", None),
    ("HTTP server, routing, auth, middleware", "/jwt/", None),
    ("HTTP server, routing, auth, middleware", "/jose/", None),
    ("HTTP server, routing, auth, middleware", "/app/api/", None),
    ("HTTP server, routing, auth, middleware", "/app/security.py", None),
    ("HTTP server, routing, auth, middleware", "/app/main.py", None),
    ("caption service logic, prompt, logging, metrics", "/app/", None),
    ("caption service logic, prompt, logging, metrics", "/logging/", None),
    ("caption service logic, prompt, logging, metrics", "/prometheus_client/", None),
)
#: Builtins named by what they do (their callers would charge them to a generic helper).
_BUILTIN_RULES: tuple[tuple[str, str], ...] = (
    ("posix.fsync", "file write+fsync"),
    ("posix.replace", "file write+fsync"),
    ("fcntl.flock", "file write+fsync"),
    ("_hashlib", "decode/resize"),  # hashing the upload, part of its validation
    ("binascii", "base64/encode"),
    ("ImagingDecoder", "decode/resize"),
    ("ImagingEncoder", "base64/encode"),
    ("sqlite3", "DB reads + writes"),
    ("torch.", "embedder/detector forward (excluded from the goal)"),
    ("faiss", "retrieval search"),
)


def _rule_stage(func: tuple[str, int, str]) -> str | None:
    filename, _, name = func
    if filename == "~":  # a builtin: "<built-in method posix.fsync>", "<method 'x' of 'Y'>"
        for needle, stage in _BUILTIN_RULES:
            if needle in name:
                return stage
        return None
    path = filename.replace("\\", "/")
    for stage, needle, prefix in _RULES:
        if needle in path and (prefix is None or name == prefix or name.startswith(prefix)):
            return stage
    return None


def stage_breakdown(stats: Any) -> dict[str, float]:  # pstats.Stats
    """CPU seconds per stage (see :data:`STAGES`) from a pstats table."""
    table = stats.stats  # {func: (cc, nc, tottime, cumtime, callers)}
    memo: dict[Any, dict[str, float]] = {}

    def shares(func: Any, seen: frozenset[Any]) -> dict[str, float]:
        if func in memo:
            return memo[func]
        stage = _rule_stage(func)
        if stage is not None:
            memo[func] = {stage: 1.0}
            return memo[func]
        callers = table.get(func, (0, 0, 0.0, 0.0, {}))[4]
        weights = {c: v[2] for c, v in callers.items() if c not in seen and v[2] > 0}
        total = sum(weights.values())
        if not total:
            return {"other": 1.0}
        out: dict[str, float] = {}
        for caller, weight in weights.items():
            for s, f in shares(caller, seen | {func}).items():
                out[s] = out.get(s, 0.0) + f * weight / total
        if not seen:
            memo[func] = out
        return out

    result = dict.fromkeys(STAGES, 0.0)
    for func, (_, _, tottime, _, _) in table.items():
        for s, f in shares(func, frozenset()).items():
            result[s] += tottime * f
    return result


class _Snapshot:
    """A profiler's stats table as ``pstats.Stats`` takes it, read without disabling it (it may
    belong to another thread)."""

    def __init__(self, profile: Any) -> None:
        profile.snapshot_stats()
        self.stats = profile.stats

    def create_stats(self) -> None:
        pass


#: Where the measuring app modules below write what they measured (set for the app process).
MEASURE_DIR_ENV = "BENCH_CAPTIONS_MEASURE_DIR"


def install_profiler(out: Path) -> None:
    """A CPU-clock cProfile in every thread of this process: the event loop's and the worker
    threads' that take the decoding, the database and the file writes. SIGUSR1 starts the
    measured window (the event loop's profile starts, the threads' are cleared: start-up,
    imports and model loading are left out), SIGUSR2 writes them, merged, to ``out``.
    """
    import cProfile
    import pstats
    import signal
    import threading

    profiles: list[cProfile.Profile] = []
    main_profile = cProfile.Profile(time.thread_time)
    # Every thread's start, subclasses with their own run() included (anyio's worker threads,
    # which run FastAPI's sync dependencies and run_in_threadpool calls).
    bootstrap = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def profiled_bootstrap(self: threading.Thread) -> None:
        profile = cProfile.Profile(time.thread_time)
        profiles.append(profile)
        profile.enable()
        try:
            bootstrap(self)
        finally:
            profile.disable()

    threading.Thread._bootstrap_inner = profiled_bootstrap  # type: ignore[attr-defined]

    def start_window(*_: object) -> None:
        for profile in list(profiles):
            profile.clear()
        main_profile.enable()  # signal handlers run in the main thread: the event loop's

    def dump(*_: object) -> None:
        main_profile.disable()
        merged = pstats.Stats(main_profile)
        for profile in list(profiles):
            snapshot = _Snapshot(profile)
            if snapshot.stats:  # pstats refuses an empty table (a thread that idled)
                merged.add(snapshot)  # type: ignore[arg-type]
        merged.dump_stats(out)

    signal.signal(signal.SIGUSR1, start_window)
    signal.signal(signal.SIGUSR2, dump)


def _native_thread_cpu(exclude: set[int]) -> dict[int, float]:
    """CPU seconds of each OS thread of this process not in ``exclude`` (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for task in Path("/proc/self/task").iterdir():
        tid = int(task.name)
        if tid in exclude:
            continue
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[tid] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return out


def install_forward_meter(out_dir: Path) -> None:
    """Count, in this app process, the CPU of the embedder's forward passes: the CPU clock of
    the thread that calls CLIP's ``encode_image``, plus that of the threads Python did not
    start (torch's OpenMP workers, which run nothing but the model). SIGUSR1 starts the window,
    SIGUSR2 writes ``<pid>.json`` to ``out_dir``. What the goal leaves out of the app's CPU.
    """
    import json as json_module
    import signal
    import threading

    from app.ml.embedder import ClipEmbedder

    lock = threading.Lock()
    spent = [0.0]
    native_before: dict[int, float] = {}
    load = ClipEmbedder._load

    def metered_load(self: ClipEmbedder) -> Any:
        parts = load(self)
        encode = parts.model.encode_image

        def encode_image(*args: Any, **kwargs: Any) -> Any:
            began = time.thread_time()
            try:
                return encode(*args, **kwargs)
            finally:
                with lock:
                    spent[0] += time.thread_time() - began

        parts.model.encode_image = encode_image
        return parts

    ClipEmbedder._load = metered_load  # type: ignore[method-assign]

    def python_threads() -> set[int]:
        return {t.native_id for t in threading.enumerate() if t.native_id is not None}

    def start_window(*_: object) -> None:
        with lock:
            spent[0] = 0.0
        native_before.clear()
        native_before.update(_native_thread_cpu(python_threads()))

    def dump(*_: object) -> None:
        native = _native_thread_cpu(python_threads())
        workers = sum(cpu - native_before.get(tid, 0.0) for tid, cpu in native.items())
        (out_dir / f"{os.getpid()}.json").write_text(
            json_module.dumps({"forward_s": spent[0] + workers, "calling_threads_s": spent[0]})
        )

    signal.signal(signal.SIGUSR1, start_window)
    signal.signal(signal.SIGUSR2, dump)


_MEASURED: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    """``bench_captions:profiled_app`` / ``bench_captions:metered_app``: the app, for uvicorn
    (``--app-dir bench``), measured in each process that imports it (once: uvicorn may ask
    twice, and a second profiler in each thread would take the first one's place)."""
    if name not in ("profiled_app", "metered_app"):
        raise AttributeError(name)
    if name not in _MEASURED:
        out_dir = Path(os.environ[MEASURE_DIR_ENV])
        if name == "profiled_app":
            install_profiler(out_dir / "app.prof")
        else:
            install_forward_meter(out_dir)
        from app.asgi import app

        _MEASURED[name] = app
    return _MEASURED[name]


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


@contextlib.contextmanager
def _app_with_concept(
    data_dir: Path, tiny: Path, latency: float, workers: int, measured: str
) -> Iterator[tuple[LiveServer, dict[str, str], int, ServerProcess]]:
    """The app (uvicorn subprocess, openai backend), served through ``measured``
    (``profiled_app`` or ``metered_app`` of this module, writing to ``data_dir / "measured"``),
    in front of its own caption server, with one user and one concept of one photo:
    (app, auth headers, concept id, the server behind it)."""
    from app.migrate import upgrade

    with ServerProcess(latency) as app_server:
        settings = _settings(
            data_dir,
            tiny,
            backend="openai",
            openai_base_urls=[app_server.base_url],
            model=app_server.model,
        )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "measured").mkdir()
        upgrade(settings.database_url)
        app = LiveServer(
            settings,
            extra_env={MEASURE_DIR_ENV: str(data_dir / "measured")},
            log_path=Path(tempfile.gettempdir()) / "bench-app.log",
            workers=workers,
            app=f"bench_captions:{measured}",
            uvicorn_args=["--app-dir", str(Path(__file__).resolve().parent)],
        ).start(timeout=300)  # a profiled start (threads under cProfile) is slower
        try:
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
            yield app, headers, created["id"], app_server
        finally:
            app.stop()


def _app_processes(app: LiveServer, workers: int) -> list[int]:
    """The processes that serve requests: uvicorn's own, or its workers (never the supervisor
    of ``--workers N``, for which SIGUSR1 means "stop", nor multiprocessing's helpers)."""
    import psutil

    assert app.proc is not None
    if workers == 1:
        return [app.proc.pid]
    children = psutil.Process(app.proc.pid).children()
    return [c.pid for c in children if "spawn_main" in " ".join(c.cmdline())]


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        os.kill(pid, signum)


def _wait_for(paths: list[Path], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # let the last one be written whole


def part_throughput(
    tmp: Path, tiny: Path, clients: int, n: int, latency: float, workers: int = 1
) -> dict:
    import signal

    # Two identical server processes: one measured alone, one behind the app, so the second
    # one's in-flight high-water mark describes the app's traffic only.
    with (
        ServerProcess(latency) as server,
        _app_with_concept(tmp / "app", tiny, latency, workers, "metered_app") as (
            app, headers, concept_id, app_server
        ),
    ):
        assert app.proc is not None
        asyncio.run(baseline(server, clients, clients))  # warm-up
        asyncio.run(through_app(app.url, headers, concept_id, clients * workers, clients))
        base_rps = asyncio.run(baseline(server, n, clients))
        pids = _app_processes(app, workers)
        _signal_all(pids, signal.SIGUSR1)
        cpu_before = app_cpu_seconds(app.proc.pid)
        app_rps = asyncio.run(through_app(app.url, headers, concept_id, n, clients))
        app_cpu_ms = (app_cpu_seconds(app.proc.pid) - cpu_before) / n * 1000
        _signal_all(pids, signal.SIGUSR2)
        reports = [tmp / "app" / "measured" / f"{pid}.json" for pid in pids]
        _wait_for(reports)
        forward_s = sum(json.loads(p.read_text())["forward_s"] for p in reports)
        base_rps2 = asyncio.run(baseline(server, n, clients))
        in_flight = app_server.max_in_flight_since_start()
    base = (base_rps + base_rps2) / 2
    return {
        "baseline_rps": base,
        "app_rps": app_rps,
        "ratio": app_rps / base,
        "ideal_rps": clients / latency,
        "app_cpu_ms": app_cpu_ms,
        "forward_ms": forward_s / n * 1000,
        "in_flight": in_flight,
    }


def part_profile(tmp: Path, tiny: Path, clients: int, n: int, latency: float) -> dict[str, float]:
    """CPU milliseconds per request by stage, from a cProfile of one app process (every thread,
    each on its own CPU clock) over ``n`` caption requests. The profiler slows pure-Python code
    more than C code, so the shares are a guide and the totals above come from the unprofiled
    run."""
    import pstats
    import signal

    with _app_with_concept(tmp / "profiled", tiny, latency, 1, "profiled_app") as (
        app, headers, concept_id, _
    ):
        assert app.proc is not None
        asyncio.run(through_app(app.url, headers, concept_id, clients, clients))  # warm-up
        os.kill(app.proc.pid, signal.SIGUSR1)
        asyncio.run(through_app(app.url, headers, concept_id, n, clients))
        os.kill(app.proc.pid, signal.SIGUSR2)
        out = tmp / "profiled" / "measured" / "app.prof"
        _wait_for([out])
        stages = stage_breakdown(pstats.Stats(str(out)))
    return {stage: seconds / n * 1000 for stage, seconds in stages.items()}


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
    parser.add_argument(
        "--profile-requests", type=int, default=128, help="requests in the profiled run (0: none)"
    )
    args = parser.parse_args()
    from app.ml.tiny import build_tiny_models

    load_before = " / ".join(f"{v:.1f}" for v in os.getloadavg())
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
        profile = (
            part_profile(tmp, tiny, args.clients, args.profile_requests, args.latency)
            if args.profile_requests
            else None
        )
        s = part_stages(tmp, tiny, args.stage_runs)
    print("## Captions (bench/bench_captions.py)\n")
    print(
        f"{time.strftime('%Y-%m-%d')}, 2-core CPU, `python bench/bench_captions.py "
        f"--clients {args.clients} --requests {args.requests} --latency {args.latency}`\n"
    )
    print(
        "| app processes (uvicorn workers) | caption server alone, req/s | through the app "
        "(POST /api/captions), req/s | ratio | app CPU per request, all | of which the "
        "embedder's forward pass | app CPU per request less the forward pass (goal <= 10 ms) "
        "| most requests in flight at the server |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for workers, t in runs:
        print(
            f"| {workers} | {t['baseline_rps']:.1f} | {t['app_rps']:.1f} | **{t['ratio']:.2f}** "
            f"| {t['app_cpu_ms']:.1f} ms | {t['forward_ms']:.1f} ms "
            f"| **{t['app_cpu_ms'] - t['forward_ms']:.1f} ms** | {t['in_flight']} |"
        )
    print(
        f"\nIdeal: {args.clients} clients / {args.latency} s = "
        f"{args.clients / args.latency:.1f} req/s. Load average before the run: "
        f"{load_before}. The embedder's forward pass is measured in the app processes "
        "themselves (CPU of the thread calling CLIP's encode_image plus torch's OpenMP "
        "threads); the detector is off, so it costs nothing.\n"
    )
    if profile is not None:
        total = sum(profile.values())
        print(
            f"App CPU per request by stage (cProfile of one app process, every thread on its own "
            f"CPU clock, {args.profile_requests} requests, {args.clients} clients; the profiler "
            "slows Python code more than C code, so read the shares, not the sum):\n"
        )
        print("| stage | CPU ms per request (profiled) | share |")
        print("|---|---:|---:|")
        for stage in STAGES:
            print(f"| {stage} | {profile[stage]:.2f} | {profile[stage] / total:.0%} |")
        print(f"| total | {total:.2f} | 100% |\n")
    print("In-process path, tiny VLM (16 new tokens), milliseconds:\n")
    print("| stage | p50 | p95 |")
    print("|---|---|---|")
    for key, (p50, p95) in s.items():
        print(f"| {key} | {p50:.1f} | {p95:.1f} |")


if __name__ == "__main__":
    main()
