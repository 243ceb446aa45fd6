"""The FastAPI application: lifespan-owned resources, routers, and one error handler."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from app.api.errors import MODEL_ERRORS, as_domain_error, http_status
from app.api.router import api_router
from app.container import Container
from app.errors import DomainError
from app.logging_setup import request_id_var, setup_logging
from app.metrics import Metrics, route_template
from app.model_services import ModelLoading
from app.settings import Settings, get_settings
from app.web.admin import router as admin_pages_router
from app.web.captions import router as captions_pages_router
from app.web.common import LoginRequired, render
from app.web.evaluations import router as evaluation_pages_router
from app.web.pages import router as pages_router
from app.wiring import build_container

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parents[1] / "static"



def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api")


def create_app(settings: Settings | None = None, container: Container | None = None) -> FastAPI:
    settings = settings or (container.settings if container else get_settings())
    setup_logging(settings.logging.level, settings.logging.json_logs)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = container is None
        if container is not None:
            ctr = container
        else:
            ctr = await asyncio.to_thread(build_container, settings, ModelLoading.ALL)
        app.state.container = ctr
        for warning in ctr.warnings:
            log.warning("%s", warning)
        try:
            yield
        finally:
            await ctr.models.aclose()
            if owned:
                ctr.close()

    app = FastAPI(
        title="RePIC personalized captioning",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/api/openapi.json",
    )
    if container is not None:
        app.state.container = container
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.auth.secret_key,
        session_cookie="repic_session",
        max_age=settings.auth.session_max_age_s,
        same_site="lax",
        https_only=settings.profile == "production" and settings.base_url.startswith("https"),
    )

    metrics = Metrics()
    app.state.metrics = metrics

    @app.middleware("http")
    async def request_id(request: Request, call_next: Any) -> Response:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        token = request_id_var.set(rid)
        began = time.perf_counter()
        status = 500
        try:
            response: Response = await call_next(request)
            status = response.status_code
        finally:
            request_id_var.reset(token)
            if request.url.path != "/metrics":
                metrics.observe_request(request.method, route_template(request), status,
                                        time.perf_counter() - began)
        response.headers["X-Request-ID"] = rid
        return response

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics(request: Request) -> Response:
        metrics.refresh(request.app.state.container)
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    async def domain_error(request: Request, exc: Exception) -> Response:
        error = as_domain_error(exc)
        status = http_status(error)
        if _is_api(request):
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            return JSONResponse({"detail": error.detail}, status_code=status, headers=headers)
        return render(request, "error.html", status, message=error.detail, status=status)

    expected: tuple[type[Exception], ...] = (DomainError, *MODEL_ERRORS)
    for kind in expected:
        app.add_exception_handler(kind, domain_error)

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(f"/login?next={quote(exc.next_url)}", status_code=303)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
            problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        detail = "; ".join(problems) or "Invalid request"
        if _is_api(request):
            return JSONResponse({"detail": detail, "errors": exc.errors()}, status_code=422)
        return render(request, "error.html", 422, message=detail, status=422)

    app.include_router(api_router)
    app.include_router(pages_router)
    app.include_router(admin_pages_router)
    app.include_router(captions_pages_router)
    app.include_router(evaluation_pages_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
