"""The FastAPI application: lifespan-owned resources, routers, and one error handler."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.deps import require_metrics_token
from app.api.errors import (
    DATABASE_ERRORS,
    MODEL_ERRORS,
    REFUSED_VALUE_ERRORS,
    as_domain_error,
    http_status,
    validation_problems,
)
from app.api.headers import SecurityHeaders, docs_policy
from app.api.limits import BodyRefused, RequestLimits
from app.api.openapi import openapi_document
from app.api.router import api_router
from app.api.schemas import ErrorBody
from app.api.session_cookie import SessionCookies
from app.container import Container
from app.errors import DomainError, NotAuthenticated
from app.logging_setup import request_id_for, request_id_var, setup_logging
from app.metrics import Metrics, route_template
from app.model_services import ModelLoading
from app.settings import Settings, get_settings
from app.web.admin import router as admin_pages_router
from app.web.captions import router as captions_pages_router
from app.web.common import LoginRequired, error_page_user, render
from app.web.evaluations import router as evaluation_pages_router
from app.web.library import router as library_pages_router
from app.web.pages import router as pages_router
from app.web.shares import router as share_pages_router
from app.wiring import build_container

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parents[1] / "static"



def _is_api(request: Request) -> bool:
    # /metrics answers its scraper like the API does: JSON errors, a Bearer challenge.
    return request.url.path.startswith("/api") or request.url.path == "/metrics"


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
        ctr.maintenance.start()  # reaps stale jobs even when no worker is alive
        try:
            yield
        finally:
            await ctr.models.aclose()
            if owned:
                ctr.close()
            metrics.close()

    app = FastAPI(
        title="RePIC personalized captioning",
        version="0.1.0",
        lifespan=lifespan,
        # /docs is served below, with a policy of its own; ReDoc is off (it needs inline styles).
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    if container is not None:
        app.state.container = container
    production = settings.profile == "production"
    if production and not settings.base_url.startswith("https://"):
        log.warning(
            "REPIC_BASE_URL=%s: the production profile marks the session cookie Secure and "
            "sends HSTS, so serve it over HTTPS (a TLS proxy in front)",
            settings.base_url,
        )
    # Innermost first: the limits read the session id that SessionCookies (outside) reads.
    app.add_middleware(RequestLimits, storage=settings.storage)
    app.add_middleware(
        SessionCookies,
        secret_key=settings.auth.secret_key,
        max_age_s=settings.auth.session_max_age_s,
        secure=production,
    )

    metrics = Metrics()
    app.state.metrics = metrics

    @app.middleware("http")
    async def request_id(request: Request, call_next: Any) -> Response:
        rid = request_id_for(request.headers.get("x-request-id"))
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

    # Outermost, so every answer of the middlewares above carries the headers too.
    app.add_middleware(SecurityHeaders, hsts=production)

    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_at_the_root() -> JSONResponse:
        """The document of /api/openapi.json, where clients look for it first."""
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def api_docs(request: Request) -> Response:
        root_path = request.scope.get("root_path", "").rstrip("/")
        page = get_swagger_ui_html(
            openapi_url=f"{root_path}{app.openapi_url}", title=f"{app.title} - Swagger UI"
        )
        page.headers["Content-Security-Policy"] = docs_policy(bytes(page.body))
        return page

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(require_metrics_token)])
    def prometheus_metrics(request: Request) -> Response:
        metrics.refresh(request.app.state.container)
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    async def domain_error(request: Request, exc: Exception) -> Response:
        error = as_domain_error(exc)
        status = http_status(error)
        headers: dict[str, str] | None = None
        if isinstance(exc, DATABASE_ERRORS):
            # One line, no traceback: an outage is not a bug, and it is over when the DB is back.
            log.warning("database unavailable for %s %s: %s", request.method,
                        request.url.path, str(exc).splitlines()[0][:200])
            headers = {"Retry-After": "5"}
        if isinstance(exc, REFUSED_VALUE_ERRORS):
            log.warning("the database refused a value of %s %s (validate it first): %s",
                        request.method, request.url.path, str(exc).splitlines()[0][:200])
        if error.retry_after_s is not None:
            headers = {"Retry-After": str(error.retry_after_s)}
        if _is_api(request):
            if status == 401:
                headers = {"WWW-Authenticate": "Bearer"}
            return JSONResponse({"detail": error.detail}, status_code=status, headers=headers)
        user = await run_in_threadpool(error_page_user, request, isinstance(exc, DATABASE_ERRORS))
        page = render(request, "error.html", status, message=error.detail, status=status,
                      user=user)
        page.headers.update(headers or {})
        return page

    expected: tuple[type[Exception], ...] = (
        DomainError, *MODEL_ERRORS, *DATABASE_ERRORS, *REFUSED_VALUE_ERRORS
    )
    for kind in expected:
        app.add_exception_handler(kind, domain_error)

    @app.exception_handler(BodyRefused)
    async def body_refused(request: Request, exc: BodyRefused) -> Response:
        if isinstance(exc.error, NotAuthenticated) and not _is_api(request):
            return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
        return await domain_error(request, exc.error)

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(f"/login?next={quote(exc.next_url)}", status_code=303)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        detail, problems = validation_problems(exc.errors())
        if _is_api(request):
            body = ErrorBody(detail=detail, errors=problems)
            return JSONResponse(body.model_dump(mode="json"), status_code=422)
        user = await run_in_threadpool(error_page_user, request)
        return render(request, "error.html", 422, message=detail, status=422, user=user)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """Routing's own errors (no such page, wrong method): JSON for the API, and for a
        browser the error page, with its header, like every other error."""
        if _is_api(request) or exc.status_code < 400:
            return await http_exception_handler(request, exc)
        message = "There is no page at this address." if exc.status_code == 404 else exc.detail
        user = await run_in_threadpool(error_page_user, request)
        page = render(request, "error.html", exc.status_code, message=message,
                      status=exc.status_code, user=user)
        page.headers.update(exc.headers or {})
        return page

    app.include_router(api_router)
    app.include_router(pages_router)
    app.include_router(share_pages_router)
    app.include_router(admin_pages_router)
    app.include_router(captions_pages_router)
    app.include_router(evaluation_pages_router)
    app.include_router(library_pages_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
