"""Shared concepts: an owner shares a concept read-only with another account (family), who may
use it in their retrieval and captions until the owner revokes it or they leave it.

What the invitee may do is read: see the concept and its photos, have retrieval find it, pin
it, see it named in captions. Changing it stays with its owner: the owner's routes
(``/api/concepts``) remain owner-scoped, so every write of the invitee's is a 404 there, and the
invitee's own routes (``/api/shared-concepts``) have no write but leaving.

Coherence across processes: which concepts are shared with a user is read from the database
on every use (retrieval, pinning, the prompt, the pages), never cached, so a revoked share is
gone from the invitee's next retrieval in every process at once. The vectors themselves stay
in their owner's partition of the index (followed through the owner's revision as always);
the invitee's retrieval searches only the shared concepts' photos there
(:meth:`app.ml.vector_store.OwnerVectorStore.search_among`). Sharing, revoking and leaving
also bump the *invitee's* index revision, as the transaction's last write, so what is derived
from the invitee's searchable photos (their calibrated threshold) is recomputed.

Names: a caption names a shared concept by its own name (``<bo>``). When that name is taken
among the invitee's concepts, the invitee's own concept keeps it ("mine wins") and the shared
one is qualified with its owner's user name, ``<bo@dad>``; two shared concepts of one name from
different owners are both qualified. ``@`` is in no concept name and no user name, so a
qualified name never clashes with anything (:func:`display_names`).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from app.errors import ConceptNotFound, Conflict, ImageNotFound, InvalidInput, NotFound
from app.models import Concept, ConceptImage, ConceptShare, User
from app.services.concepts import Transaction, owned_concepts, unit_of_work
from app.services.index_sync import bump_owner_revision, void

#: Most accounts one concept can be shared with (a family, not a broadcast).
MAX_SHARES_PER_CONCEPT = 50


def qualified_name(name: str, owner_name: str) -> str:
    """A shared concept's name with its owner's: ``bo@dad``.

    >>> qualified_name("bo", "dad")
    'bo@dad'
    """
    return f"{name}@{owner_name}"


def display_names(
    own_names: Iterable[str], shared: Sequence[tuple[int, str, str]]
) -> dict[int, str]:
    """How the invitee's captions name each shared concept (``(id, name, owner name)``).

    A shared concept keeps its name unless one of the invitee's own concepts has it (theirs
    wins) or another shared concept has it too; then it is qualified (case-insensitively, as
    concept names are unique per owner).

    >>> display_names(["bo"], [(7, "bo", "dad"), (8, "mia", "dad"), (9, "Mia", "gran")])
    {7: 'bo@dad', 8: 'mia@dad', 9: 'Mia@gran'}
    >>> display_names([], [(7, "bo", "dad")])
    {7: 'bo'}
    """
    own = {n.lower() for n in own_names}
    counts: dict[str, int] = {}
    for _, name, _ in shared:
        counts[name.lower()] = counts.get(name.lower(), 0) + 1
    return {
        concept_id: (
            qualified_name(name, owner)
            if name.lower() in own or counts[name.lower()] > 1
            else name
        )
        for concept_id, name, owner in shared
    }


@dataclass(frozen=True)
class SharedConcept:
    """A concept shared with the caller, as their retrieval, captions and pages see it."""

    concept_id: int
    owner_id: int
    owner_name: str
    #: The concept's own name, and how the invitee's captions write it (see the module doc).
    name: str
    display_name: str
    category: str
    description: str
    share_id: int


def shared_concepts(session: Session, invitee_id: int) -> builtins.list[SharedConcept]:
    """Every concept shared with ``invitee_id`` now (read from the database: never cached)."""
    rows = session.execute(
        select(
            ConceptShare.id,
            Concept.id,
            Concept.owner_id,
            User.username,
            Concept.name,
            Concept.category,
            Concept.description,
        )
        .join(Concept, Concept.id == ConceptShare.concept_id)
        .join(User, User.id == Concept.owner_id)
        .where(ConceptShare.invitee_id == invitee_id)
        .order_by(func.lower(Concept.name), Concept.id)
    ).all()
    if not rows:
        return []
    own = session.scalars(select(Concept.name).where(Concept.owner_id == invitee_id))
    names = display_names(own, [(int(r[1]), r[4], r[3]) for r in rows])
    return [
        SharedConcept(
            concept_id=int(cid),
            owner_id=int(owner_id),
            owner_name=owner_name,
            name=name,
            display_name=names[int(cid)],
            category=category,
            description=description,
            share_id=int(share_id),
        )
        for share_id, cid, owner_id, owner_name, name, category, description in rows
    ]


@dataclass(frozen=True)
class UsableConcept:
    """A concept the caller may pin or be shown: their own, or one shared with them."""

    concept: Concept
    #: The name the caller's captions use (qualified for a clashing shared concept).
    name: str
    shared: SharedConcept | None = None


def usable_concepts(
    session: Session, user: User, ids: Sequence[int]
) -> builtins.list[UsableConcept]:
    """The caller's own concepts and those shared with them, with these ids, in order (photos
    loaded); any other id is a 404 naming it, as :func:`owned_concepts` answers."""
    wanted = list(dict.fromkeys(int(i) for i in ids))
    if not wanted:
        return []
    shared = {s.concept_id: s for s in shared_concepts(session, user.id)}
    others = [i for i in wanted if i in shared]
    own = {c.id: c for c in owned_concepts(session, user, [i for i in wanted if i not in shared])}
    loaded = {
        c.id: c
        for c in session.scalars(
            select(Concept).where(Concept.id.in_(others)).options(selectinload(Concept.images))
        )
    } if others else {}
    out = []
    for i in wanted:
        if i in own:
            out.append(UsableConcept(own[i], own[i].name))
        elif i in loaded:
            out.append(UsableConcept(loaded[i], shared[i].display_name, shared[i]))
        else:  # unshared (or deleted) since the list above was read
            raise ConceptNotFound(f"Concept {i} not found")
    return out


def usable_names(session: Session, user: User) -> dict[int, str]:
    """Every concept id the caller's captions may name, with the name they use."""
    names = {
        int(i): n
        for i, n in session.execute(
            select(Concept.id, Concept.name).where(Concept.owner_id == user.id)
        )
    }
    names.update({s.concept_id: s.display_name for s in shared_concepts(session, user.id)})
    return names


class SearchableHooks(Protocol):
    """What the index does when the concepts a user's retrieval searches change."""

    def searchable_changed(self, session: Session, tx: Transaction, owner_id: int) -> None: ...


class BumpRevision:
    """Without a loaded index (a CLI, a worker): the revision alone, for the processes that
    serve one."""

    def searchable_changed(self, session: Session, tx: Transaction, owner_id: int) -> None:
        tx.before_commit.append(lambda: void(bump_owner_revision(session, owner_id)))


class ConceptShareService:
    """Sharing a concept (owner side), and the concepts shared with a user (invitee side).

    ``hooks`` is the index of this process when it serves one (it bumps the invitee's
    revision and follows it at once), else :class:`BumpRevision`."""

    def __init__(self, hooks: SearchableHooks | None = None) -> None:
        self.hooks: SearchableHooks = hooks or BumpRevision()

    # -- owner side ------------------------------------------------------------------------
    def share(self, session: Session, owner: User, concept_id: int, username: str) -> ConceptShare:
        """Share ``owner``'s concept with the account ``username`` (read-only for them)."""
        (concept,) = owned_concepts(session, owner, [concept_id])
        name = (username or "").strip()
        if not name:
            raise InvalidInput("Name the account to share with (its user name)")
        invitee = session.scalar(select(User).where(func.lower(User.username) == name.lower()))
        if invitee is None:
            raise NotFound(f"No account named {name!r}")
        if invitee.id == owner.id:
            raise InvalidInput("A concept cannot be shared with its own owner")
        existing = session.scalars(
            select(ConceptShare.invitee_id).where(ConceptShare.concept_id == concept.id)
        ).all()
        if invitee.id in existing:
            raise Conflict(f"<{concept.name}> is already shared with {invitee.username}")
        if len(existing) >= MAX_SHARES_PER_CONCEPT:
            raise InvalidInput(
                f"A concept can be shared with at most {MAX_SHARES_PER_CONCEPT} accounts"
            )
        share = ConceptShare(concept_id=concept.id, owner_id=owner.id, invitee_id=invitee.id)
        try:
            with unit_of_work(session) as tx:
                session.add(share)
                session.flush()
                self.hooks.searchable_changed(session, tx, invitee.id)
        except IntegrityError:  # the same share made meanwhile, or the concept deleted
            raise Conflict(f"<{concept.name}> is already shared with {invitee.username}") from None
        return self._share(session, share.id)

    def shares_of(
        self, session: Session, owner: User, concept_id: int
    ) -> builtins.list[ConceptShare]:
        """Who ``owner``'s concept is shared with (a 404 for anyone else's concept)."""
        owned_concepts(session, owner, [concept_id])
        return list(
            session.scalars(
                select(ConceptShare)
                .where(ConceptShare.concept_id == concept_id, ConceptShare.owner_id == owner.id)
                .options(selectinload(ConceptShare.invitee))
                .order_by(ConceptShare.id)
            )
        )

    def revoke(self, session: Session, owner: User, concept_id: int, share_id: int) -> None:
        """The owner ends a share: gone from the invitee's retrieval and captions at once."""
        share = session.scalar(
            select(ConceptShare).where(
                ConceptShare.id == share_id,
                ConceptShare.concept_id == concept_id,
                ConceptShare.owner_id == owner.id,
            )
        )
        if share is None:
            raise NotFound("Share not found")
        self._delete(session, share)

    # -- invitee side ----------------------------------------------------------------------
    def shared_with(
        self, session: Session, invitee: User
    ) -> builtins.list[tuple[SharedConcept, Concept]]:
        """Every concept shared with ``invitee``, with its photos, by name."""
        shared = shared_concepts(session, invitee.id)
        if not shared:
            return []
        concepts = {
            c.id: c
            for c in session.scalars(
                select(Concept)
                .where(Concept.id.in_([s.concept_id for s in shared]))
                .options(selectinload(Concept.images))
            )
        }
        return [(s, concepts[s.concept_id]) for s in shared if s.concept_id in concepts]

    def get_shared(
        self, session: Session, invitee: User, concept_id: int
    ) -> tuple[SharedConcept, Concept]:
        """A concept shared with ``invitee`` (photos loaded); a 404 when it is not (any more)."""
        shared = next(
            (s for s in shared_concepts(session, invitee.id) if s.concept_id == concept_id), None
        )
        if shared is None:
            raise ConceptNotFound()
        concept = session.scalar(
            select(Concept)
            .where(Concept.id == concept_id)
            .options(selectinload(Concept.images))
            .execution_options(populate_existing=True)
        )
        if concept is None:
            raise ConceptNotFound()
        return shared, concept

    def shared_image(
        self, session: Session, invitee: User, concept_id: int, image_id: int
    ) -> ConceptImage:
        """A photo of a concept shared with ``invitee`` (a 404 otherwise)."""
        image = session.scalar(
            select(ConceptImage)
            .join(ConceptShare, ConceptShare.concept_id == ConceptImage.concept_id)
            .where(
                ConceptImage.id == image_id,
                ConceptImage.concept_id == concept_id,
                ConceptShare.invitee_id == invitee.id,
            )
        )
        if image is None:
            raise ImageNotFound()
        return image

    def leave(self, session: Session, invitee: User, concept_id: int) -> None:
        """The invitee gives a shared concept back (its owner keeps it, of course)."""
        share = session.scalar(
            select(ConceptShare).where(
                ConceptShare.concept_id == concept_id, ConceptShare.invitee_id == invitee.id
            )
        )
        if share is None:
            raise ConceptNotFound()
        self._delete(session, share)

    # -- internals -------------------------------------------------------------------------
    def _delete(self, session: Session, share: ConceptShare) -> None:
        invitee_id = share.invitee_id
        with unit_of_work(session) as tx:
            session.delete(share)
            session.flush()
            # The revision row is the last write, as in every index change (no deadlock).
            self.hooks.searchable_changed(session, tx, invitee_id)

    @staticmethod
    def _share(session: Session, share_id: int) -> ConceptShare:
        share = session.scalar(
            select(ConceptShare)
            .where(ConceptShare.id == share_id)
            .options(selectinload(ConceptShare.invitee))
        )
        assert share is not None
        return share
