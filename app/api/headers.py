"""Security headers on every answer (one ASGI middleware), and the policy of the API docs page.

The pages load only the app's own scripts and styles and none inline (no ``<script>`` body, no
``style=`` attribute, no ``on...=`` handler in ``templates/``; a test keeps it so), which lets
the Content-Security-Policy forbid inline code altogether. Framing is refused (clickjacking),
MIME sniffing is off, the referrer stays on this site, and the production profile adds HSTS
(its session cookie is ``Secure`` too: see ``app.main``).
"""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_COMMON_DIRECTIVES = (
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
)
PAGE_POLICY = "; ".join(
    (
        "default-src 'self'",
        # blob: the previews of the photos chosen in a form (static/app.js).
        "img-src 'self' data: blob:",
        "style-src 'self'",
        "script-src 'self'",
        *_COMMON_DIRECTIVES,
    )
)
HSTS = "max-age=31536000"

#: Where FastAPI's Swagger UI page loads its script, style and icon from.
_DOCS_CDN = "https://cdn.jsdelivr.net"
_DOCS_ICON_HOST = "https://fastapi.tiangolo.com"
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def docs_policy(html: bytes) -> str:
    """The policy of the Swagger UI page ``html``: its bundle from the CDN, and its inline
    start-up script allowed by its hash, not by ``'unsafe-inline'``."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return "; ".join(
        (
            "default-src 'self'",
            f"img-src 'self' data: {_DOCS_ICON_HOST}",
            f"style-src 'self' {_DOCS_CDN}",
            f"script-src 'self' {_DOCS_CDN} {hashes}".rstrip(),
            *_COMMON_DIRECTIVES,
        )
    )


class SecurityHeaders:
    """Adds the headers to every HTTP answer; one a route set itself (the docs page's policy)
    is kept."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.headers = {
            "Content-Security-Policy": PAGE_POLICY,
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "same-origin",
        }
        if hsts:
            self.headers["Strict-Transport-Security"] = HSTS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
