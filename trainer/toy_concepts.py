"""Toy concepts for tiny runs, tests and benches: DreamBooth photos when present, else drawings.

:func:`toy_concepts` is what ``repic train --tiny`` trains on when it is given no data.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from trainer.concept_records import ConceptPhotos

#: Where toy runs look for real photos (the project's shared data folder, if checked out).
SHARED_DREAMBOOTH = Path(__file__).resolve().parents[2] / "shared" / "data" / "dreambooth"
#: The DreamBooth subjects a toy run trains on (three photos each).
TOY_SUBJECTS = ("dog", "cat", "backpack", "vase", "candle", "clock")


def toy_concepts(photo_dir: str | Path, seed: int = 0) -> list[ConceptPhotos]:
    """A few DreamBooth subjects (three photos each) when the shared folder is checked out,
    else drawn shapes written under ``photo_dir``."""
    concepts: list[ConceptPhotos] = []
    if SHARED_DREAMBOOTH.is_dir():
        concepts = dreambooth_concepts(SHARED_DREAMBOOTH, TOY_SUBJECTS, max_photos=3)
    return concepts or generated_concepts(photo_dir, seed=seed)


def dreambooth_concepts(
    root: str | Path, subjects: Sequence[str] | None = None, max_photos: int | None = None
) -> list[ConceptPhotos]:
    """Concepts from a DreamBooth-style folder (``<subject>/NN.jpg``), for toy runs and benches.

    Categories come from ``prompts_and_classes.txt`` when present (``subject,class`` lines).
    """
    root = Path(root)
    categories: dict[str, str] = {}
    classes = root / "prompts_and_classes.txt"
    if classes.is_file():
        for line in classes.read_text(encoding="utf-8").splitlines():
            parts = line.strip().split(",")
            if len(parts) == 2 and parts[0] != "subject_name":
                categories[parts[0]] = parts[1]
    folders = sorted(d for d in root.iterdir() if d.is_dir())
    if subjects is not None:
        wanted = set(subjects)
        folders = [d for d in folders if d.name in wanted]
    concepts = []
    for folder in folders:
        photos = sorted(
            p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
        )
        if max_photos is not None:
            photos = photos[:max_photos]
        if photos:
            fallback = folder.name.rstrip("0123456789").replace("_", " ")
            category = categories.get(folder.name, fallback)
            concepts.append(
                ConceptPhotos(folder.name, folder.name, f"a {category}", category, photos)
            )
    return concepts


def generated_concepts(
    out_dir: str | Path, n_concepts: int = 4, photos: int = 3, size: int = 96, seed: int = 0
) -> list[ConceptPhotos]:
    """Concepts whose photos are drawn shapes (one colour and shape per concept), no files needed.

    Used when no real photos are around (tests on a fresh clone, ``repic train --tiny``).
    """
    from PIL import Image, ImageDraw

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    shapes = ("ellipse", "rectangle", "triangle")
    concepts = []
    for index in range(n_concepts):
        colour = tuple(rng.randint(30, 225) for _ in range(3))
        shape = shapes[index % len(shapes)]
        paths = []
        for k in range(photos):
            background = tuple(rng.randint(0, 255) for _ in range(3))
            img = Image.new("RGB", (size + rng.randint(0, size // 2), size), background)
            draw = ImageDraw.Draw(img)
            x0, y0 = rng.randint(0, size // 3), rng.randint(0, size // 3)
            x1, y1 = x0 + rng.randint(size // 3, size // 2), y0 + rng.randint(size // 3, size // 2)
            if shape == "ellipse":
                draw.ellipse((x0, y0, x1, y1), fill=colour)
            elif shape == "rectangle":
                draw.rectangle((x0, y0, x1, y1), fill=colour)
            else:
                draw.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=colour)
            path = out_dir / f"concept{index}_{k}.png"
            img.save(path)
            paths.append(path)
        concepts.append(
            ConceptPhotos(f"c{index}", f"thing{index}", f"a {shape}", f"{shape} {index}", paths)
        )
    return concepts
