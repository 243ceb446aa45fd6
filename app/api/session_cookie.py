"""The browser session cookie ``repic_session``: an opaque random id, nothing else.

:class:`SessionCookies` (a middleware) reads the id a request carries into a
:class:`SessionCookie` on the scope and writes back what the request decided: a new id after a
login, a deletion after a logout. Which user an id belongs to is the database's business
(:class:`app.services.browser_sessions.BrowserSessions`); an id with no row is an anonymous
visitor, who needs one only so that the login and registration forms have a CSRF token.
The CSRF token is derived from the id (:func:`app.security.csrf_token_for`), never stored.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.security import csrf_token_for, new_session_token, same_secret

COOKIE_NAME = "repic_session"
_SCOPE_KEY = "repic.session_cookie"


@dataclass
class SessionCookie:
    """The session id of one request, and what its answer sets."""

    secret_key: str
    sent: str | None
    issued: str | None = None
    ended: bool = False
    #: Whether the id resolved to a live session (set by the user dependency).
    signed_in: bool = False

    @property
    def token(self) -> str | None:
        """The id in effect: a newly issued one, else the one sent (None after a logout)."""
        if self.issued is not None:
            return self.issued
        return None if self.ended else self.sent

    def issue(self, token: str) -> None:
        """Send ``token`` as the new cookie (after a login)."""
        self.issued, self.ended = token, False

    def end(self) -> None:
        """Delete the cookie (after a logout)."""
        self.issued, self.ended, self.signed_in = None, True, False

    def csrf_token(self) -> str:
        """The CSRF token for the forms of this answer; an anonymous visitor gets an id here."""
        if self.token is None:
            self.issue(new_session_token())
        assert self.token is not None
        return csrf_token_for(self.token, self.secret_key)

    def csrf_matches(self, sent: str) -> bool:
        token = self.token
        if token is None or not sent:
            return False
        return same_secret(csrf_token_for(token, self.secret_key), sent)


def session_cookie(connection: HTTPConnection) -> SessionCookie:
    """The request's :class:`SessionCookie` (made by :class:`SessionCookies`)."""
    state: SessionCookie = connection.scope[_SCOPE_KEY]
    return state


class SessionCookies:
    """Pure ASGI middleware: the session id in, the cookie it decided on out."""

    def __init__(self, app: ASGIApp, *, secret_key: str, max_age_s: int, secure: bool) -> None:
        self.app = app
        self.secret_key = secret_key
        self.max_age_s = max_age_s
        self.attributes = "; Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = HTTPConnection(scope).cookies.get(COOKIE_NAME) or None
        if sent is not None and len(sent) > 128:
            sent = None  # not an id this server made
        state = SessionCookie(secret_key=self.secret_key, sent=sent)
        scope[_SCOPE_KEY] = state

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                header = self._set_cookie(state)
                if header is not None:
                    MutableHeaders(scope=message).append("set-cookie", header)
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    def _set_cookie(self, state: SessionCookie) -> str | None:
        if state.issued is not None:
            return f"{COOKIE_NAME}={state.issued}; Max-Age={self.max_age_s}{self.attributes}"
        if state.ended and state.sent is not None:
            return (
                f"{COOKIE_NAME}=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT{self.attributes}"
            )
        return None
