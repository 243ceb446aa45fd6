"""Turn model rows into public schemas (URLs included)."""

from __future__ import annotations

from app.api.schemas import ConceptPublic, ImagePublic
from app.models import Concept, ConceptImage


def image_public(image: ConceptImage) -> ImagePublic:
    base = f"/api/concepts/{image.concept_id}/images/{image.id}"
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
