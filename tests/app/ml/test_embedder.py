"""ClipEmbedder on tiny random-weight CLIPs built locally (no download)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from app.ml.embedder import DEFAULT_MODEL_NAME, DEFAULT_PRETRAINED, ClipEmbedder
from app.ml.errors import ModelUnavailable
from app.ml.tiny_clip import WEIGHTS_NAME, build_tiny_clip

pytestmark = pytest.mark.nodb


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip") / "clip", seed=0)


@pytest.fixture(scope="session")
def embedder(tiny_clip_dir: Path) -> ClipEmbedder:
    model = ClipEmbedder(f"local-dir:{tiny_clip_dir}", None)
    model.load()
    return model


def _images() -> list[Image.Image]:
    return [
        Image.new("RGB", (120, 80), (200, 30, 30)),
        Image.new("L", (40, 90), 128),
        Image.new("RGBA", (64, 64), (0, 0, 255, 128)),
    ]


def test_embed_images_returns_unit_float32_rows(embedder: ClipEmbedder) -> None:
    vectors = embedder.embed_images(_images(), batch_size=2)

    assert vectors.shape == (3, embedder.dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_embed_texts_returns_unit_float32_rows(embedder: ClipEmbedder) -> None:
    vectors = embedder.embed_texts(["a photo of a dog", "a mug"])

    assert vectors.shape == (2, 64)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_same_image_gives_same_vector(embedder: ClipEmbedder) -> None:
    image = Image.new("RGB", (100, 100), (10, 200, 50))

    first = embedder.embed_images([image])
    second = embedder.embed_images([image.copy(), _images()[0]])[:1]

    np.testing.assert_allclose(first, second, atol=1e-5)


def test_empty_input_gives_empty_matrix(embedder: ClipEmbedder) -> None:
    assert embedder.embed_images([]).shape == (0, 64)
    assert embedder.embed_texts([]).shape == (0, 64)


def test_dim_is_known_without_loading(tiny_clip_dir: Path) -> None:
    model = ClipEmbedder(f"local-dir:{tiny_clip_dir}", None)

    assert model.dim == 64
    assert not model.loaded


def test_model_id_differs_between_seeds(tmp_path: Path, tiny_clip_dir: Path) -> None:
    other = build_tiny_clip(tmp_path / "clip", seed=1)

    first = ClipEmbedder(f"local-dir:{tiny_clip_dir}", None).model_id
    second = ClipEmbedder(f"local-dir:{other}", None).model_id

    assert first.startswith("open_clip:local-dir:clip:")
    assert first != second


def test_model_id_is_stable_for_the_same_weights(tiny_clip_dir: Path) -> None:
    first = ClipEmbedder(f"local-dir:{tiny_clip_dir}", None).model_id
    second = ClipEmbedder(f"local-dir:{tiny_clip_dir}", None).model_id

    assert first == second


def test_model_id_of_a_hub_tag_names_model_and_tag() -> None:
    model = ClipEmbedder(DEFAULT_MODEL_NAME, DEFAULT_PRETRAINED)

    assert model.model_id == "open_clip:ViT-L-14-336-quickgelu:openai"
    assert model.dim == 768


def test_local_dir_may_be_given_as_pretrained(tiny_clip_dir: Path) -> None:
    model = ClipEmbedder("tiny", f"local-dir:{tiny_clip_dir}")

    assert model.model_name == f"local-dir:{tiny_clip_dir}"
    assert model.model_id == ClipEmbedder(f"local-dir:{tiny_clip_dir}", "").model_id


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_file_overrides_folder_weights(
    tmp_path: Path, tiny_clip_dir: Path, embedder: ClipEmbedder, suffix: str
) -> None:
    other = build_tiny_clip(tmp_path / "other", seed=1)
    weights = tmp_path / f"weights{suffix}"
    if suffix == ".pt":
        torch.save(load_file(str(other / WEIGHTS_NAME)), weights)
    else:
        shutil.copy(other / WEIGHTS_NAME, weights)
    image = [Image.new("RGB", (64, 64), (1, 2, 3))]

    from_file = ClipEmbedder(f"local-dir:{tiny_clip_dir}", str(weights))
    from_folder = ClipEmbedder(f"local-dir:{other}", None)

    np.testing.assert_allclose(
        from_file.embed_images(image), from_folder.embed_images(image), atol=1e-5
    )
    assert not np.allclose(from_file.embed_images(image), embedder.embed_images(image))
    assert weights.name in from_file.model_id


def test_missing_folder_raises_model_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="not found"):
        ClipEmbedder(f"local-dir:{tmp_path / 'nope'}", None).load()


def test_folder_without_weights_raises_model_unavailable(
    tmp_path: Path, tiny_clip_dir: Path
) -> None:
    folder = tmp_path / "clip"
    folder.mkdir()
    shutil.copy(tiny_clip_dir / "open_clip_config.json", folder)

    with pytest.raises(ModelUnavailable, match="no weights"):
        ClipEmbedder(f"local-dir:{folder}", None).load()


def test_missing_weights_file_raises_model_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="not found"):
        ClipEmbedder("ViT-B-32", str(tmp_path / "missing.safetensors")).load()


def test_unknown_tag_raises_model_unavailable() -> None:
    with pytest.raises(ModelUnavailable, match="known tag"):
        ClipEmbedder("ViT-B-32", "no-such-tag").load()


def test_unknown_architecture_raises_model_unavailable() -> None:
    with pytest.raises(ModelUnavailable, match="unknown open_clip model"):
        ClipEmbedder("ViT-Nope", "openai").load()


def test_invalid_precision_is_rejected(tiny_clip_dir: Path) -> None:
    with pytest.raises(ValueError, match="precision"):
        ClipEmbedder(f"local-dir:{tiny_clip_dir}", None, precision="fp8")


def test_unload_then_embed_loads_again(tiny_clip_dir: Path) -> None:
    model = ClipEmbedder(f"local-dir:{tiny_clip_dir}", None)
    model.load()
    model.unload()

    assert not model.loaded
    assert model.embed_texts(["a dog"]).shape == (1, 64)


def test_local_dir_ignores_a_hub_tag(tiny_clip_dir: Path) -> None:
    model = ClipEmbedder(f"local-dir:{tiny_clip_dir}", "openai")

    assert model.pretrained is None
    assert model.model_id == ClipEmbedder(f"local-dir:{tiny_clip_dir}", None).model_id
