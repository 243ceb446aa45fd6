"""``repic serve`` and ``repic worker``: the long-running processes (web app, Celery worker)."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from app.cli.context import current_settings, ensure_database, fail


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
    migrate: Annotated[bool, typer.Option(help="Upgrade the database first.")] = True,
    reload: Annotated[bool, typer.Option(help="Reload on code changes (development).")] = False,
) -> None:
    """Run the web app (and, in the embedded profile, a local worker)."""
    import uvicorn

    settings = current_settings()
    ensure_database(settings)
    if migrate:
        from app.migrate import upgrade

        upgrade(settings.database_url)
    typer.echo(
        f"RePIC on http://{host}:{port}  (data: {settings.data_dir}, db: "
        f"{settings.database_url.split('@')[-1]})"
    )
    from worker.embedded import EmbeddedWorker, embedded_broker

    local_worker = None
    if settings.worker.embedded_worker and embedded_broker(settings):
        # No broker configured: run the jobs on a local worker over the SQLite broker.
        local_worker = EmbeddedWorker(settings).start()
        typer.echo(f"local worker started (log: {local_worker.log_path})")
    # uvicorn re-raises the signal that stopped it once it has shut down; with the default
    # SIGTERM action that would end this process before the local worker is stopped.
    signal.signal(signal.SIGTERM, _stop_quietly)
    metrics_dir = _metrics_dir(workers if not reload else 1)
    try:
        uvicorn.run(
            "app.asgi:app",
            host=host,
            port=port,
            workers=workers if not reload else 1,
            reload=reload,
            proxy_headers=True,
            # No `server: uvicorn` banner: it only tells a scanner what to try.
            server_header=False,
        )
    finally:
        if local_worker is not None:
            local_worker.stop()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _metrics_dir(workers: int) -> Path | None:
    """With several workers, a fresh directory for prometheus_client's multiprocess mode
    (app/metrics.py), handed to the workers through the environment; removed again at exit.
    Set before the workers start (they import prometheus_client fresh) and after the local
    worker started (it has no /metrics). An operator's own PROMETHEUS_MULTIPROC_DIR is kept,
    emptied of an earlier run's files."""
    if workers <= 1:
        return None
    from app.metrics import MULTIPROC_ENV

    given = os.environ.get(MULTIPROC_ENV)
    if given:
        for stale in Path(given).glob("*.db"):
            stale.unlink(missing_ok=True)
        return None
    path = Path(tempfile.mkdtemp(prefix="repic-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def _stop_quietly(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def worker_cmd(
    queues: Annotated[str, typer.Option(help="cpu, gpu or cpu,gpu.")] = "cpu",
    pool: Annotated[
        str | None,
        typer.Option(
            help="Celery pool; default prefork (gpu: one task per child, so CUDA lives and dies "
            "in the child)."
        ),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Parallel tasks (default: gpu 1, cpu the number of cores).")
    ] = None,
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """Start a Celery worker on the cpu or gpu queue (Flower works against the same broker)."""
    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    if not wanted or any(q not in ("cpu", "gpu") for q in wanted):
        fail("--queues must be cpu, gpu or cpu,gpu")
    ensure_database(current_settings())
    from worker.celery_app import app as celery_app

    argv = ["worker", "-Q", ",".join(wanted), "--loglevel", loglevel, "--pool", pool or "prefork"]
    if "gpu" in wanted:
        argv += ["--concurrency", str(concurrency or 1)]
        if (pool or "prefork") == "prefork":
            argv += ["--max-tasks-per-child", "1"]
    elif concurrency:
        argv += ["--concurrency", str(concurrency)]
    celery_app.worker_main(argv)
