"""Pydantic request/response models of the API (XCreate / XUpdate / XPublic / XsPublic)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class UserCreate(BaseModel):
    username: str = Field(examples=["anya"])
    password: str = Field(examples=["correct horse battery"])


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    username: str
    is_admin: bool
    created_at: dt.datetime


class TokenCreate(BaseModel):
    name: str = Field(examples=["laptop script"])
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
    name: str | None = None
    description: str | None = None
    category: str | None = None
    use_for_training: bool | None = None


class ImageUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    eval_only: bool | None = None
    box: list[int] | None = None


class ImagesPublic(BaseModel):
    data: list[ImagePublic]
    count: int


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    checks: dict[str, Any]
    warnings: list[str]
    models: dict[str, Any] = {}
    dependencies: dict[str, Any] = {}
