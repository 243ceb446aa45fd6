"""Fixtures of the trainer's data tests: concepts and the records built from them."""

from __future__ import annotations

import pytest

from tests.trainer.factories import colour_concepts
from trainer.concept_records import BuildOptions, ConceptPhotos, build_concept_records
from trainer.records import TrainingRecord


@pytest.fixture(scope="module")
def concepts(tmp_path_factory: pytest.TempPathFactory) -> list[ConceptPhotos]:
    """Five concepts, three solid-colour photos each (one colour per concept)."""
    return colour_concepts(tmp_path_factory.mktemp("concepts"))


@pytest.fixture(scope="module")
def built(
    concepts: list[ConceptPhotos], tmp_path_factory: pytest.TempPathFactory
) -> list[TrainingRecord]:
    out = tmp_path_factory.mktemp("composites")
    return build_concept_records(concepts, out, BuildOptions(num_records=200, seed=3))
