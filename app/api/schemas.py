"""Pydantic request/response models of the API (XCreate / XUpdate / XPublic / XsPublic)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.api.params import Text


class UserCreate(BaseModel):
    username: Text = Field(examples=["anya"])
    password: Text = Field(examples=["correct horse battery"])


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    username: str
    is_admin: bool
    created_at: dt.datetime
    allow_feedback_training: bool = Field(
        False,
        description="Whether your accepted and edited captions that name your concepts become "
        "training records of the next retrain.",
    )


class UserUpdate(BaseModel):
    """Your account's settings (``PATCH /api/auth/me``)."""

    model_config = ConfigDict(extra="forbid")
    allow_feedback_training: bool | None = Field(
        None, description="Allow my feedback (accepted and edited captions) to train the model."
    )


class TokenCreate(BaseModel):
    name: Text = Field(examples=["laptop script"])
    ttl_days: int | None = Field(None, ge=1, le=3650)


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_at: dt.datetime | None = None


class ApiTokenPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    prefix: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None


class ApiTokenCreated(ApiTokenPublic):
    token: str


class ApiTokensPublic(BaseModel):
    data: list[ApiTokenPublic]
    count: int


class PasswordChange(BaseModel):
    current_password: Text
    new_password: Text = Field(examples=["a brand new passphrase"])
    revoke_tokens: bool = Field(False, description="Also revoke every API token of the account.")


class LogoutAll(BaseModel):
    revoke_tokens: bool = Field(False, description="Also revoke every API token of the account.")


class SessionsEndedPublic(BaseModel):
    """What a password change or "log out everywhere" ended (the caller's own browser session,
    when it changed the password with its cookie, goes on under a new cookie)."""

    sessions_ended: int
    tokens_revoked: int


class ImagePublic(BaseModel):
    id: int
    concept_id: int
    url: str
    thumbnail_url: str
    sha256: str
    width: int
    height: int
    format: str
    bytes: int
    eval_only: bool
    box: list[int] | None = None
    created_at: dt.datetime


class ConceptPublic(BaseModel):
    id: int
    name: str
    description: str
    category: str
    use_for_training: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    images: list[ImagePublic]


class ConceptsPublic(BaseModel):
    data: list[ConceptPublic]
    count: int


class ConceptUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Text | None = None
    description: Text | None = None
    category: Text | None = None
    use_for_training: bool | None = None


class ImageUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    eval_only: bool | None = None
    box: list[int] | None = None


class ImagesPublic(BaseModel):
    data: list[ImagePublic]
    count: int


class ShareCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: Text = Field(examples=["boris"], description="The account to share with.")


class SharePublic(BaseModel):
    """One account a concept of yours is shared with."""

    id: int
    concept_id: int
    username: str
    created_at: dt.datetime


class SharesPublic(BaseModel):
    data: list[SharePublic]
    count: int


class SharedConceptPublic(BaseModel):
    """A concept someone shared with you: read-only, usable in your retrieval and captions."""

    id: int
    name: str
    caption_name: str = Field(
        description="How your captions name it: its name, or name@owner when one of your own "
        "concepts (or another shared one) has that name."
    )
    owner: str
    description: str
    category: str
    read_only: bool = True
    images: list[ImagePublic]


class SharedConceptsPublic(BaseModel):
    data: list[SharedConceptPublic]
    count: int


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    checks: dict[str, Any]
    #: Only for an admin or the metrics token (absent for anyone else), as ``models`` is.
    warnings: list[str] | None = None
    models: dict[str, Any] | None = None
    dependencies: dict[str, Any] = {}


class ValidationProblem(BaseModel):
    """One part of a request that failed validation."""

    type: str = Field(examples=["missing"], description="What kind of problem (pydantic's).")
    loc: list[str | int] = Field(
        examples=[["body", "name"]], description="Where: body, query or path, then the field."
    )
    msg: str = Field(examples=["Field required"])


class ErrorBody(BaseModel):
    """The body of every error answer of the API."""

    detail: str = Field(
        examples=["name: Field required"], description="What went wrong, in one sentence."
    )
    errors: list[ValidationProblem] | None = Field(
        None, description="422 only: each part of the request that failed validation."
    )
