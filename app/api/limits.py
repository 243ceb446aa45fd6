"""Request-body limits, and no upload read before its caller is known (one ASGI middleware).

Every body is held to a limit of its route: ``storage.max_body_bytes`` for a route without
files (JSON, forms), plus what its files may weigh for a route that takes some (the
:class:`~app.api.uploads.UploadKind` next to each ``File()``, sized by the upload settings).
A Content-Length over the limit is refused before a byte is read; a body sent without one
(chunked) is counted as it streams and cut off at the limit. An upload route reads its body
only for a caller with a valid bearer token or a logged-in session: anyone else is answered
before the body is read, so an anonymous client can make the server neither buffer a body nor
spool one to disk.

The check runs at the app's first ``receive()``: routing has then found the route
(``scope["route"]``), and no byte of the body has been read yet.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.deps import caller_is_known, get_container
from app.api.errors import http_status
from app.api.uploads import UploadKind
from app.errors import DomainError, NotAuthenticated, PayloadTooLarge
from app.settings import StorageSettings


class BodyRefused(HTTPException):
    """A request whose body is not read, with the domain error its caller is told.

    An ``HTTPException`` because FastAPI turns any other exception raised while it reads a body
    into a 400 ("There was an error parsing the body"); ``app.main`` answers it as it answers
    that domain error (a page that needs a login redirects to it).
    """

    def __init__(self, error: DomainError) -> None:
        super().__init__(status_code=http_status(error), detail=error.detail)
        self.error = error


def upload_kinds(route: object) -> list[UploadKind]:
    """What each file parameter of ``route`` carries (nothing for a route without files)."""
    if not isinstance(route, APIRoute):
        return []
    return [
        marker
        for param in route.dependant.body_params
        for marker in param.field_info.metadata
        if isinstance(marker, UploadKind)
    ]


class RequestLimits:
    """The middleware; inside ``SessionCookies``, whose session id it reads."""

    def __init__(self, app: ASGIApp, storage: StorageSettings) -> None:
        self.app = app
        self.storage = storage

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = _GuardedBody(scope, receive, send, self.storage)
        await self.app(scope, body.receive, body.send)


class _GuardedBody:
    """One request's body: admitted (or refused) at the first ``receive()``, then counted."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, storage: StorageSettings):
        self.scope = scope
        self._receive = receive
        self._send = send
        self.storage = storage
        self.limit: int | None = None
        self.received = 0
        self.answering = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.answering = True
        await self._send(message)

    async def receive(self) -> Message:
        if self.answering:
            # Once the answer has begun, the app only listens for the client going away.
            return await self._receive()
        if self.limit is None:
            self.limit = await self._admit()
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                raise BodyRefused(_too_large(self.limit))
        return message

    async def _admit(self) -> int:
        kinds = upload_kinds(self.scope.get("route"))
        limit = self.storage.max_body_bytes + sum(kind.max_bytes(self.storage) for kind in kinds)
        length = _content_length(self.scope)
        if length is not None and length > limit:
            raise BodyRefused(_too_large(limit))
        if kinds and not await run_in_threadpool(_caller_is_known, self.scope):
            raise BodyRefused(NotAuthenticated("Not authenticated"))
        return limit


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body over the limit of {limit} bytes")


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        # The server refuses a malformed length before the app sees it; counting still holds.
        return None


def _caller_is_known(scope: Scope) -> bool:
    request = Request(scope)
    with get_container(request).session_factory() as session:
        return caller_is_known(request, session)
