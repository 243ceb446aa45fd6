"""Logging in and out: throttled password checks, browser sessions, password changes.

Every password check of a login goes through :class:`LoginThrottle` first, so a locked-out
name or address never reaches argon2. A password change ends every browser session of the
account (the caller's browser gets a new one, so a stolen copy of its cookie dies too); API
tokens stay unless the caller asks to revoke them, because scripts hold them on purpose and
the token list on the account page shows and revokes them one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.errors import Forbidden, NotAuthenticated
from app.models import ApiToken, User
from app.security import hash_password
from app.services import users as user_service
from app.services.browser_sessions import BrowserSessions, Client, end_user_sessions
from app.services.login_throttle import LoginThrottle
from app.settings import AuthSettings


@dataclass(frozen=True)
class SessionsEnded:
    """What a password change or "log out everywhere" ended."""

    sessions_ended: int
    tokens_revoked: int
    #: The cookie id of the session that replaces the caller's own (None: none was started).
    new_session: str | None = None


class Accounts:
    def __init__(
        self, auth: AuthSettings, throttle: LoginThrottle, sessions: BrowserSessions
    ) -> None:
        self.auth = auth
        self.throttle = throttle
        self.sessions = sessions

    def authenticate(self, session: Session, username: str, password: str, client: Client) -> User:
        """The account of ``username`` if ``password`` is right, counted by the throttle;
        :class:`~app.errors.TooManyRequests` without a password check when locked out."""
        attempt = self.throttle.admit(username, client.address or None)
        user = user_service.authenticate(session, username, password)
        self.throttle.succeeded(attempt)
        return user

    def log_in(
        self,
        session: Session,
        username: str,
        password: str,
        client: Client,
        previous: str | None = None,
    ) -> str:
        """A browser login: the new session's cookie id. ``previous``, the id the browser had,
        is ended (logging in again as someone else leaves no second live session behind)."""
        user = self.authenticate(session, username, password, client)
        if previous is not None:
            self.sessions.end(session, previous)
        return self.sessions.start(session, user, client)

    def log_in_for_token(
        self, session: Session, username: str, password: str, client: Client
    ) -> tuple[str, ApiToken]:
        """The OAuth2 password flow: a new bearer token (plain text returned once)."""
        user = self.authenticate(session, username, password, client)
        return user_service.create_token(session, user, "login", ttl_days=self.auth.token_ttl_days)

    def change_password(
        self,
        session: Session,
        user: User,
        current_password: str,
        new_password: str,
        client: Client,
        *,
        revoke_tokens: bool = False,
        in_browser: bool = False,
    ) -> SessionsEnded:
        """Set a new password and end every session of ``user``; ``in_browser``: the caller
        came with a session cookie, and gets a new session in its place."""
        try:
            self.authenticate(session, user.username, current_password, client)
        except NotAuthenticated:
            raise Forbidden("Current password is incorrect") from None
        user_service.validate_credentials(
            user.username, new_password, self.auth.min_password_length
        )
        user.password_hash = hash_password(new_password)
        ended = end_user_sessions(session, user.id)
        revoked = user_service.revoke_all_tokens(session, user) if revoke_tokens else 0
        session.commit()
        replacement = self.sessions.start(session, user, client) if in_browser else None
        return SessionsEnded(
            sessions_ended=ended - (1 if in_browser else 0),
            tokens_revoked=revoked,
            new_session=replacement,
        )

    def log_out_everywhere(
        self, session: Session, user: User, *, revoke_tokens: bool = False
    ) -> SessionsEnded:
        """End every browser session of ``user``, the caller's own too."""
        ended = end_user_sessions(session, user.id)
        revoked = user_service.revoke_all_tokens(session, user) if revoke_tokens else 0
        session.commit()
        return SessionsEnded(sessions_ended=ended, tokens_revoked=revoked)

    def log_out(self, session: Session, token: str) -> None:
        self.sessions.end(session, token)
