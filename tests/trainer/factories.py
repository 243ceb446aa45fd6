"""Small factories shared by the trainer's data tests: solid-colour photos and their concepts."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from trainer.concept_records import ConceptPhotos

#: One colour per concept, so a pixel tells which concept's photo it belongs to.
COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (220, 220, 30), (30, 220, 220)]


def solid(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (80, 60)) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def colour_concepts(root: Path) -> list[ConceptPhotos]:
    """Five concepts, three solid-colour photos each (one colour per concept)."""
    out = []
    for index, colour in enumerate(COLOURS):
        paths = [solid(root / f"c{index}_{k}.png", colour, (80 + 8 * k, 60)) for k in range(3)]
        out.append(
            ConceptPhotos(f"id{index}", f"Real{index}", f"thing {index}", f"category{index}", paths)
        )
    return out
