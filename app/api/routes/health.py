"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api.deps import ContainerDep
from app.api.schemas import Health, Ready

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health() -> Health:
    return Health(status="ok")


@router.get("/ready", response_model=Ready)
def ready(container: ContainerDep) -> JSONResponse:
    """Database and storage reachable; model fallbacks reported in ``warnings``."""
    checks: dict[str, object] = {}
    try:
        with container.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means not ready
        checks["database"] = f"error: {exc.__class__.__name__}"
    store_root = container.store.root
    try:
        store_root.mkdir(parents=True, exist_ok=True)
        probe = store_root / ".ready-probe"
        probe.write_bytes(b"ok")
        probe.unlink()
        checks["storage"] = "ok"
    except OSError as exc:
        checks["storage"] = f"error: {exc.strerror}"
    models = container.extras.get("models_status", {})
    ok = all(v == "ok" for v in checks.values())
    body = Ready(
        status="ok" if ok else "unavailable",
        checks=checks,
        warnings=list(container.warnings),
        models=models,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)
