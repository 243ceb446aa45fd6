"""Accounts over the API: register, obtain a bearer token (throttled), personal API tokens,
change the password, log out everywhere."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, status

from app.api.deps import AccountsDep, ClientDep, ContainerDep, CurrentUser, SessionDep
from app.api.params import PathId, Text
from app.api.schemas import (
    ApiTokenCreated,
    ApiTokenPublic,
    ApiTokensPublic,
    LogoutAll,
    PasswordChange,
    SessionsEndedPublic,
    TokenCreate,
    TokenResponse,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from app.api.session_cookie import session_cookie
from app.services import users as user_service

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/register", response_model=UserPublic, status_code=status.HTTP_201_CREATED)
def register(body: UserCreate, session: SessionDep, container: ContainerDep) -> UserPublic:
    user = user_service.sign_up(session, body.username, body.password, container.settings.auth)
    return UserPublic.model_validate(user)


@router.post("/token", response_model=TokenResponse)
def login_for_token(
    username: Annotated[Text, Form()],
    password: Annotated[Text, Form()],
    session: SessionDep,
    accounts: AccountsDep,
    client: ClientDep,
) -> TokenResponse:
    """OAuth2 password flow: form fields ``username`` and ``password`` -> a bearer token.

    Throttled per username and per client address: once the limit of failures is reached the
    answer is ``429`` with ``Retry-After``, without checking the password."""
    token, row = accounts.log_in_for_token(session, username, password, client)
    return TokenResponse(access_token=token, expires_at=row.expires_at)


@router.post("/password", response_model=SessionsEndedPublic)
def change_password(
    body: PasswordChange,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    accounts: AccountsDep,
    client: ClientDep,
) -> SessionsEndedPublic:
    """Set a new password; every browser session of the account ends (a caller with a session
    cookie gets a new one). API tokens stay unless ``revoke_tokens``."""
    cookie = session_cookie(request)
    outcome = accounts.change_password(
        session,
        user,
        body.current_password,
        body.new_password,
        client,
        revoke_tokens=body.revoke_tokens,
        in_browser=cookie.signed_in,
    )
    if outcome.new_session is not None:
        cookie.issue(outcome.new_session)
    return SessionsEndedPublic(
        sessions_ended=outcome.sessions_ended, tokens_revoked=outcome.tokens_revoked
    )


@router.post("/logout-all", response_model=SessionsEndedPublic)
def log_out_everywhere(
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    accounts: AccountsDep,
    body: LogoutAll | None = None,
) -> SessionsEndedPublic:
    """End every browser session of the account, the caller's own too; API tokens stay unless
    ``revoke_tokens``."""
    outcome = accounts.log_out_everywhere(
        session, user, revoke_tokens=body.revoke_tokens if body else False
    )
    cookie = session_cookie(request)
    if cookie.signed_in:
        cookie.end()
    return SessionsEndedPublic(
        sessions_ended=outcome.sessions_ended, tokens_revoked=outcome.tokens_revoked
    )


@router.get("/me", response_model=UserPublic)
def me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)


@router.patch("/me", response_model=UserPublic)
def update_me(body: UserUpdate, user: CurrentUser, session: SessionDep) -> UserPublic:
    """Your account's settings: ``allow_feedback_training`` ("allow my feedback to train the
    model", off until you turn it on) makes your accepted and edited captions that name your
    concepts training records of the next retrain; turning it off leaves them out of it."""
    if body.allow_feedback_training is not None:
        user = user_service.set_feedback_training(session, user, body.allow_feedback_training)
    return UserPublic.model_validate(user)


@router.get("/tokens", response_model=ApiTokensPublic)
def list_tokens(user: CurrentUser, session: SessionDep) -> ApiTokensPublic:
    rows = user_service.list_tokens(session, user)
    return ApiTokensPublic(data=[ApiTokenPublic.model_validate(r) for r in rows], count=len(rows))


@router.post("/tokens", response_model=ApiTokenCreated, status_code=status.HTTP_201_CREATED)
def create_token(body: TokenCreate, user: CurrentUser, session: SessionDep) -> ApiTokenCreated:
    token, row = user_service.create_token(session, user, body.name, ttl_days=body.ttl_days)
    return ApiTokenCreated(token=token, **ApiTokenPublic.model_validate(row).model_dump())


@router.delete("/tokens/{token_id}", response_model=ApiTokenPublic)
def revoke_token(token_id: PathId, user: CurrentUser, session: SessionDep) -> ApiTokenPublic:
    row = user_service.revoke_token(session, user, token_id)
    return ApiTokenPublic.model_validate(row)
