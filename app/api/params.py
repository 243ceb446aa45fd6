"""Parameter and field types of the API that bound what reaches the database: ids, offsets,
and text without NUL characters.

Each bound is declared in the OpenAPI document and checked by FastAPI before a route runs, so
bad input is one 422 with the field's name, the same on SQLite and PostgreSQL, instead of a
driver error (a 500) from the database.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from app.models import MAX_ID

#: Beyond this no list has rows to skip; the bound keeps OFFSET inside both databases' range.
MAX_SKIP = 2**31 - 1

NUL_MESSAGE = "must not contain NUL characters"


def no_nul(value: Any) -> Any:
    """``value`` unchanged, unless a string in it (keys included) holds a NUL: PostgreSQL
    stores no NUL in text or JSON, and no name or caption needs one."""
    if _has_nul(value):
        raise PydanticCustomError("nul_character", NUL_MESSAGE)
    return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


#: A text field or parameter (JSON, form or query) that is stored or compared in the database.
Text = Annotated[str, AfterValidator(no_nul)]
#: A JSON object given by the caller and stored as is (training overrides).
JsonObject = Annotated[dict[str, Any], AfterValidator(no_nul)]

# Ids are PostgreSQL ``integer`` columns (SQLite's reach to 2**63 - 1): a larger id names no
# row. Out of range is a 422, not a 404, because the range is part of the documented contract
# (``maximum`` in the schema), as for any other malformed parameter.

#: A row id in a JSON body.
BodyId = Annotated[int, Field(ge=1, le=MAX_ID)]
#: A row id in the path (``/concepts/{concept_id}``).
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]
#: An optional row id in the query string (a filter).
QueryId = Annotated[int | None, Query(ge=1, le=MAX_ID)]
#: Rows to skip in a list.
Skip = Annotated[int, Query(ge=0, le=MAX_SKIP)]
