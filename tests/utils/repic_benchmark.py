"""Small synthetic copies of the RePIC repository's benchmark folders, with the shipped quirks.

The layout and the oddities are those of ``data/database_tot`` and ``data/query_tot`` in the
RePIC repository (REPIC_SPEC.md §8.5): image paths relative to the repository root
(``./data/database_tot/...``) or to an older layout (``./database/Anya.jpg``, found by file
name), keys that are not names (``<ironman>`` is "Iron Man"), keys and names with spaces and
dots, a file name that differs from its key (``scalet witch.jpg``), and 4-concept queries as a
list of 4-key subsets per group photo.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.utils.images import make_image

#: key -> (display name, image path as the database file writes it, category)
FOUR_CONCEPTS: dict[str, tuple[str, str, str]] = {
    "<thor>": ("Thor", "./database/thor.jpg", "human"),
    "<ironman>": (
        "Iron Man",
        "./data/database_tot/database_4_concepts/avengers/ironman.jpg",
        "human",
    ),
    "<black widow>": (
        "Black Widow",
        "./data/database_tot/database_4_concepts/avengers/black widow.jpg",
        "human",
    ),
    "<captain america>": (
        "Captain America",
        "./data/database_tot/database_4_concepts/avengers/captain america.jpg",
        "human",
    ),
    "<scarlet witch>": (
        "Scarlet Witch",
        "./data/database_tot/database_4_concepts/avengers/scalet witch.jpg",
        "human",
    ),
    "<mr.krab>": (
        "Mr.Krabs",
        "./data/database_tot/database_4_concepts/spongebob/mr.krab.jpg",
        "character",
    ),
    "<mrs.puff>": (
        "Mrs.Puff",
        "./data/database_tot/database_4_concepts/spongebob/mrs.puff.jpg",
        "character",
    ),
    "<patrick>": (
        "Patrick",
        "./data/database_tot/database_4_concepts/spongebob/patrick.jpg",
        "character",
    ),
    "<sandy>": (
        "Sandy",
        "./data/database_tot/database_4_concepts/spongebob/sandy.jpg",
        "character",
    ),
}

FOUR_QUERIES = {
    "./data/query-image-4-concepts/group photo_avengers.jpg": [
        ["<thor>", "<ironman>", "<black widow>", "<captain america>"],
        ["<thor>", "<ironman>", "<black widow>", "<scarlet witch>"],
    ],
    "./data/query-image-4-concepts/group photo_spongebob.jpg": [
        ["<mr.krab>", "<mrs.puff>", "<patrick>", "<sandy>"],
    ],
}


def _photo(path: Path, index: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = (40 + 23 * index % 200, 200 - 17 * index % 180, 60 + 31 * index % 190)
    path.write_bytes(make_image(color=colour, shape=index, fmt="JPEG"))


def four_concept_repository(repo: Path) -> tuple[Path, Path]:
    """Write a RePIC-like repository under ``repo``; return (database_mod.json, query file)."""
    db_dir = repo / "data" / "database_tot" / "database_4_concepts"
    concept_dict = {}
    path_to_concept = {}
    for index, (key, (name, image, category)) in enumerate(FOUR_CONCEPTS.items()):
        if image.startswith("./database/"):
            # The older layout: the file lies in the database's own folder.
            _photo(db_dir / Path(image).name, index)
        else:
            _photo(repo / image, index)
        concept_dict[key] = {
            "name": name,
            "image": image,
            "info": f"{name}, a {category}.",
            "category": category,
        }
        path_to_concept[image] = key
    db = db_dir / "database_mod.json"
    db.write_text(
        json.dumps({"concept_dict": concept_dict, "path_to_concept": path_to_concept}, indent=4)
    )
    for index, image in enumerate(FOUR_QUERIES):
        _photo(repo / image, 50 + index)
    queries = repo / "data" / "query_tot" / "4_concept_query_templates.json"
    queries.parent.mkdir(parents=True, exist_ok=True)
    queries.write_text(json.dumps(FOUR_QUERIES, indent=4))
    return db, queries


def two_concept_repository(repo: Path) -> tuple[Path, Path]:
    """The 2-concept set: ``./database/<key>.jpg`` paths (older layout), case-sensitive keys."""
    db_dir = repo / "data" / "database_tot" / "database_2_concepts"
    keys = ("Anya", "Bond")
    concept_dict = {}
    for index, key in enumerate(keys):
        _photo(db_dir / f"{key}.jpg", index)
        concept_dict[f"<{key}>"] = {
            "name": key,
            "image": f"./database/{key}.jpg",
            "info": f"{key} info",
            "category": "person",
        }
    db = db_dir / "database.json"
    db.write_text(
        json.dumps(
            {
                "concept_dict": concept_dict,
                "path_to_concept": {f"./database/{k}.jpg": f"<{k}>" for k in keys},
            }
        )
    )
    query = "./data/query-image-2-concepts/Anya_and_Bond/Anya_and_Bond_1.jpg"
    _photo(repo / query, 9)
    queries = repo / "data" / "query_tot" / "2_concept_query_templates.json"
    queries.parent.mkdir(parents=True, exist_ok=True)
    queries.write_text(json.dumps({query: ["<Anya>", "<Bond>"]}))
    return db, queries
