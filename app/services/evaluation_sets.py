"""Evaluation sets: a user's own sets of query photos (list, look up, build from held-out photos).

An *evaluation set* is owned by one user: queries ``[{"image": stored path, "sha256", "names"}]``
over that user's concepts (imported from the RAP/RePIC format by :mod:`app.services.rap_format`,
or built here from the user's own photos marked evaluation-only, which are never references nor
training data). Another user's set is "not found", never "forbidden".
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import Conflict, InvalidInput, NotFound
from app.models import MAX_ID, EvaluationSet, User
from app.services.rap_format import heldout_queries

log = logging.getLogger(__name__)

#: Longest set name (the column's length).
MAX_SET_NAME = 100


class EvaluationSetNotFound(NotFound):
    def __init__(self, detail: str = "Evaluation set not found") -> None:
        super().__init__(detail)


class EvaluationSetService:
    """The evaluation sets of their owners; every read is scoped to the caller."""

    def list(self, session: Session, owner: User) -> list[EvaluationSet]:
        """``owner``'s sets, newest first."""
        return list(
            session.scalars(
                select(EvaluationSet)
                .where(EvaluationSet.owner_id == owner.id)
                .order_by(EvaluationSet.id.desc())
            )
        )

    def get(self, session: Session, owner: User, ref: int | str) -> EvaluationSet:
        """``owner``'s set by id or by name (a name made of digits is tried as an id first);
        another user's set is not found."""
        query = select(EvaluationSet).where(EvaluationSet.owner_id == owner.id)
        # ASCII digits in the id range only: "²" is a digit to str.isdigit() but not to int(),
        # and a larger number is no id on PostgreSQL (its driver refuses it).
        as_id = ref if isinstance(ref, int) else int(ref) if ref.isascii() and ref.isdigit() else 0
        row = None
        if 1 <= as_id <= MAX_ID:
            row = session.scalar(query.where(EvaluationSet.id == as_id))
        if row is None and isinstance(ref, str):
            row = session.scalar(query.where(EvaluationSet.name == ref))
        if row is None:
            raise EvaluationSetNotFound()
        return row

    def create_heldout(
        self, session: Session, owner: User, name: str, case_sensitive: bool = False
    ) -> EvaluationSet:
        """A set of ``owner``'s evaluation-only photos, each with its concept names."""
        set_name = (name or "").strip()
        if not set_name or len(set_name) > MAX_SET_NAME:
            raise InvalidInput(f"An evaluation set needs a name of 1 to {MAX_SET_NAME} characters")
        exists = session.scalar(
            select(EvaluationSet.id).where(
                EvaluationSet.owner_id == owner.id, EvaluationSet.name == set_name
            )
        )
        if exists is not None:
            raise Conflict(f"An evaluation set named {set_name!r} already exists")
        queries = heldout_queries(session, owner)
        if not queries:
            raise InvalidInput(
                "No photo is marked evaluation-only: mark some held-out photos "
                "of your concepts first"
            )
        row = EvaluationSet(
            owner_id=owner.id, name=set_name, case_sensitive=case_sensitive, queries=queries
        )
        session.add(row)
        session.commit()
        return row
