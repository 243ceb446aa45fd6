"""Turn model rows into public schemas (URLs included)."""

from __future__ import annotations

from app.api.schemas import (
    ConceptPublic,
    ImagePublic,
    SharedConceptPublic,
    SharePublic,
)
from app.models import Concept, ConceptImage, ConceptShare
from app.services.concept_shares import SharedConcept


def image_public(image: ConceptImage, prefix: str = "/api/concepts") -> ImagePublic:
    """``prefix``: the routes the caller reads the photo from (a shared concept's invitee
    reads it from ``/api/shared-concepts``)."""
    base = f"{prefix}/{image.concept_id}/images/{image.id}"
    return ImagePublic(
        id=image.id,
        concept_id=image.concept_id,
        url=base,
        thumbnail_url=f"{base}/thumbnail",
        sha256=image.sha256,
        width=image.width,
        height=image.height,
        format=image.format,
        bytes=image.bytes,
        eval_only=image.eval_only,
        box=image.box,
        created_at=image.created_at,
    )


def concept_public(concept: Concept) -> ConceptPublic:
    return ConceptPublic(
        id=concept.id,
        name=concept.name,
        description=concept.description,
        category=concept.category,
        use_for_training=concept.use_for_training,
        created_at=concept.created_at,
        updated_at=concept.updated_at,
        images=[image_public(i) for i in concept.images],
    )


def share_public(share: ConceptShare) -> SharePublic:
    return SharePublic(
        id=share.id,
        concept_id=share.concept_id,
        username=share.invitee.username,
        created_at=share.created_at,
    )


def shared_concept_public(shared: SharedConcept, concept: Concept) -> SharedConceptPublic:
    return SharedConceptPublic(
        id=concept.id,
        name=concept.name,
        caption_name=shared.display_name,
        owner=shared.owner_name,
        description=concept.description,
        category=concept.category,
        images=[image_public(i, "/api/shared-concepts") for i in concept.images],
    )
