"""Accounts over the API: register, obtain a bearer token, personal API tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, status

from app.api.deps import ContainerDep, CurrentUser, SessionDep
from app.api.schemas import (
    ApiTokenCreated,
    ApiTokenPublic,
    ApiTokensPublic,
    TokenCreate,
    TokenResponse,
    UserCreate,
    UserPublic,
)
from app.services import users as user_service

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/register", response_model=UserPublic, status_code=status.HTTP_201_CREATED)
def register(body: UserCreate, session: SessionDep, container: ContainerDep) -> UserPublic:
    user = user_service.sign_up(session, body.username, body.password, container.settings.auth)
    return UserPublic.model_validate(user)


@router.post("/token", response_model=TokenResponse)
def login_for_token(
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    session: SessionDep,
    container: ContainerDep,
) -> TokenResponse:
    """OAuth2 password flow: form fields ``username`` and ``password`` -> a bearer token."""
    user = user_service.authenticate(session, username, password)
    token, row = user_service.create_token(
        session, user, "login", ttl_days=container.settings.auth.token_ttl_days
    )
    return TokenResponse(access_token=token, expires_at=row.expires_at)


@router.get("/me", response_model=UserPublic)
def me(user: CurrentUser) -> UserPublic:
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
def revoke_token(token_id: int, user: CurrentUser, session: SessionDep) -> ApiTokenPublic:
    row = user_service.revoke_token(session, user, token_id)
    return ApiTokenPublic.model_validate(row)
