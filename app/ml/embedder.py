"""CLIP image/text embedder (open_clip) used for retrieval: crops and reference photos -> vectors.

Lifecycle in Immich's style (:class:`~app.ml.base.InferenceModel`): construct cheaply (no weights
touched), ``load()`` builds the model, ``unload()`` frees it; ``embed_*`` load lazily on first
use. Outputs are float32, L2-normalised, so inner product in the vector store is cosine
similarity.

Where the weights come from (``model_name`` / ``pretrained``):

* built-in architecture + hub tag: ``ClipEmbedder("ViT-L-14-336-quickgelu", "openai")``. Loaded
  through open_clip's hub cache; offline (``HF_HUB_OFFLINE=1``) it works only when cached.
* built-in architecture + local file: ``ClipEmbedder("ViT-B-32", "/models/clip.safetensors")``
  (``.pt``/``.pth``/``.bin``/``.safetensors``).
* hub-style folder (``open_clip_config.json`` + ``open_clip_model.safetensors``): open_clip 3.3.0
  reads it only as ``model_name="local-dir:/path"`` (it *ignores* ``pretrained`` then). We accept
  it either as ``model_name="local-dir:/path"`` or as ``pretrained="local-dir:/path"`` (then
  ``model_name`` is only a label). ``model_name="local-dir:/path"`` together with a weights
  *file* as ``pretrained`` takes the architecture from the folder and the weights from the file;
  a hub *tag* given with a folder is ignored with a warning, as open_clip does.

``model_id`` is the "embedder id" stored with every embedding in the DB and in the vector store:
vectors from two different ids must never be compared. For local weights it carries the file name
and a content fingerprint, so two tiny models built with different seeds get different ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from app.ml.base import InferenceModel
from app.ml.errors import ModelUnavailable
from app.ml.images import model_ready

logger = logging.getLogger(__name__)

#: The paper's retrieval encoder (CLIP ViT-L/14 at 336 px, 768-d). OpenAI's weights were trained
#: with QuickGELU, so the ``-quickgelu`` variant of the architecture is the correct one; the plain
#: ``ViT-L-14-336`` config would load them into a GELU network and silently degrade embeddings.
DEFAULT_MODEL_NAME = "ViT-L-14-336-quickgelu"
DEFAULT_PRETRAINED = "openai"

LOCAL_DIR_PREFIX = "local-dir:"
HF_HUB_PREFIX = "hf-hub:"
CONFIG_NAME = "open_clip_config.json"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
PRECISIONS = ("fp32", "fp16", "bf16")
#: Bytes read from each end of a weights file for its fingerprint: hashing a 1.7 GB ViT-L file
#: in full would cost seconds at every start; header + first and last tensors tell models apart.
_FINGERPRINT_CHUNK = 4 << 20


def _fingerprint(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with path.open("rb") as fh:
            digest.update(fh.read(_FINGERPRINT_CHUNK))
            if size > 2 * _FINGERPRINT_CHUNK:
                fh.seek(-_FINGERPRINT_CHUNK, os.SEEK_END)
                digest.update(fh.read(_FINGERPRINT_CHUNK))
    return digest.hexdigest()[:12]


def _find_folder_weights(folder: Path) -> Path | None:
    """The weights open_clip will pick in a hub-style folder (same preference order)."""
    preferred = (
        "open_clip_model.safetensors",
        "open_clip_pytorch_model.safetensors",
        "open_clip_pytorch_model.bin",
        "open_clip_pytorch_model.pth",
        "model.safetensors",
        "pytorch_model.bin",
        "pytorch_model.pth",
        "model.pth",
    )
    for name in preferred:
        if (folder / name).is_file():
            return folder / name
    candidates = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    return candidates[0] if candidates else None


class _ClipParts(NamedTuple):
    model: Any
    preprocess: Any
    tokenizer: Any


class ClipEmbedder(InferenceModel[_ClipParts]):
    """Embeds images and texts into one L2-normalised space with an open_clip CLIP model."""

    def __init__(
        self,
        model_name: str,
        pretrained: str | None,
        device: str = "cpu",
        precision: str = "fp32",
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if pretrained and pretrained.startswith(LOCAL_DIR_PREFIX):
            if model_name and model_name != pretrained:
                logger.info(
                    "pretrained=%s given: model_name %r is only a label", pretrained, model_name
                )
            model_name, pretrained = pretrained, None
        if (
            model_name.startswith(LOCAL_DIR_PREFIX)
            and pretrained
            and Path(pretrained).suffix not in WEIGHT_SUFFIXES
        ):
            # As open_clip does: the folder names its own weights, a hub tag means nothing here
            # (and a settings default of "openai" must not break a local-dir model_name).
            logger.warning("ignoring pretrained=%r: %s holds its weights", pretrained, model_name)
            pretrained = None
        self.model_name = model_name
        self.pretrained = pretrained or None
        self.device = device
        self.precision = precision
        super().__init__()

    # ------------------------------------------------------------------ sources

    @property
    def _folder(self) -> Path | None:
        if self.model_name.startswith(LOCAL_DIR_PREFIX):
            return Path(self.model_name[len(LOCAL_DIR_PREFIX) :]).expanduser()
        return None

    @property
    def _weights_file(self) -> Path | None:
        if self.pretrained and Path(self.pretrained).suffix in WEIGHT_SUFFIXES:
            return Path(self.pretrained).expanduser()
        return None

    @cached_property
    def _model_cfg(self) -> dict[str, Any]:
        """Architecture config, read without building the model (for ``dim``)."""
        folder = self._folder
        if folder is not None:
            config_path = folder / CONFIG_NAME
            if not config_path.is_file():
                raise ModelUnavailable(f"CLIP folder {folder} has no {CONFIG_NAME}")
            try:
                config = json.loads(config_path.read_text())
                return dict(config["model_cfg"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ModelUnavailable(f"{config_path} is not an open_clip config: {exc}") from exc
        import open_clip

        try:
            cfg = open_clip.get_model_config(self.model_name)
        except Exception as exc:  # hf-hub: config fetch fails offline with hub-specific errors
            raise ModelUnavailable(f"cannot read config of {self.model_name!r}: {exc}") from exc
        if cfg is None:
            raise ModelUnavailable(
                f"unknown open_clip model {self.model_name!r}; use a built-in name "
                f"(e.g. {DEFAULT_MODEL_NAME}) or 'local-dir:/path/to/folder'"
            )
        return dict(cfg)

    def _check_sources(self) -> None:
        """Fail with ``ModelUnavailable`` before open_clip raises its own, vaguer errors."""
        folder = self._folder
        if folder is not None:
            if not folder.is_dir():
                raise ModelUnavailable(f"CLIP folder not found: {folder}")
            self._model_cfg  # noqa: B018 - validates the config file
            if self._weights_file is None and _find_folder_weights(folder) is None:
                raise ModelUnavailable(f"CLIP folder {folder} holds no weights file")
        else:
            self._model_cfg  # noqa: B018 - validates the architecture name
            if self.pretrained is None and not self.model_name.startswith(HF_HUB_PREFIX):
                raise ModelUnavailable(
                    f"no weights given for {self.model_name!r}: set pretrained to a tag, "
                    "a weights file or 'local-dir:/path' (random weights are never served)"
                )
        weights = self._weights_file
        if weights is not None and not weights.is_file():
            raise ModelUnavailable(f"CLIP weights file not found: {weights}")
        if self._folder is None and weights is None and self.pretrained is not None:
            import open_clip

            if not open_clip.get_pretrained_cfg(self.model_name, self.pretrained):
                tags = open_clip.list_pretrained_tags_by_model(self.model_name)
                raise ModelUnavailable(
                    f"{self.pretrained!r} is neither a weights file nor a known tag of "
                    f"{self.model_name!r} (tags: {', '.join(tags) or 'none'})"
                )

    # ------------------------------------------------------------------ identity

    @cached_property
    def model_id(self) -> str:
        """Stable id of architecture + weights, e.g. ``open_clip:ViT-L-14-336-quickgelu:openai``."""
        self._check_sources()
        folder, weights = self._folder, self._weights_file
        if folder is not None:
            files = [folder / CONFIG_NAME, weights or _find_folder_weights(folder)]
            label = folder.name if weights is None else f"{folder.name}+{weights.name}"
            return f"open_clip:local-dir:{label}:{_fingerprint(*[f for f in files if f])}"
        if weights is not None:
            return f"open_clip:{self.model_name}:{weights.name}:{_fingerprint(weights)}"
        if self.pretrained is None:  # hf-hub:org/repo names config and weights at once
            return f"open_clip:{self.model_name}"
        return f"open_clip:{self.model_name}:{self.pretrained}"

    @property
    def dim(self) -> int:
        return int(self._model_cfg["embed_dim"])

    # ------------------------------------------------------------------ lifecycle

    def _load(self) -> _ClipParts:
        """Build the model on ``device``. Raises ``ModelUnavailable``."""
        self._check_sources()
        import open_clip

        kwargs: dict[str, Any] = {"precision": self.precision, "device": self.device}
        weights = self._weights_file
        try:
            if self._folder is not None:
                model, _, preprocess = open_clip.create_model_and_transforms(
                    self.model_name, load_weights=weights is None, **kwargs
                )
                if weights is not None:
                    open_clip.load_checkpoint(model, str(weights))
            else:
                tag_cfg = open_clip.get_pretrained_cfg(self.model_name, self.pretrained or "")
                if tag_cfg.get("quick_gelu") and not self._model_cfg.get("quick_gelu"):
                    # The weights were trained with QuickGELU: build the matching network.
                    logger.warning(
                        "%s/%s needs QuickGELU; use %s-quickgelu (forcing it now)",
                        self.model_name,
                        self.pretrained,
                        self.model_name,
                    )
                    kwargs["force_quick_gelu"] = True
                model, _, preprocess = open_clip.create_model_and_transforms(
                    self.model_name, pretrained=self.pretrained, **kwargs
                )
            tokenizer = open_clip.get_tokenizer(self.model_name)
        except (RuntimeError, OSError, ValueError) as exc:
            # open_clip wraps hub/offline failures in RuntimeError; files give OSError.
            raise ModelUnavailable(
                f"cannot load CLIP {self.model_name!r} (pretrained={self.pretrained!r}): {exc}"
            ) from exc
        model.eval()
        logger.info("loaded CLIP %s on %s (%s)", self.model_id, self.device, self.precision)
        return _ClipParts(model, preprocess, tokenizer)

    def _after_unload(self) -> None:
        import torch

        if self.device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.empty_cache()
        logger.info("unloaded CLIP %s", self.model_id)

    # ------------------------------------------------------------------ inference

    @property
    def input_size(self) -> int | None:
        """The side, in pixels, of the square the model looks at: its preprocessing brings an
        image's short side to it, then crops. ``None`` while the model is not loaded."""
        state = self._state
        size = getattr(state.model.visual, "image_size", None) if state is not None else None
        if isinstance(size, (tuple, list)):
            return int(max(size))
        return int(size) if isinstance(size, int) else None

    def _input_dtype(self) -> Any:
        import torch

        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision, torch.float32)

    @staticmethod
    def _normalised(features: Any) -> np.ndarray:
        import torch

        out = torch.nn.functional.normalize(features.float(), dim=-1)
        return np.ascontiguousarray(out.cpu().numpy(), dtype=np.float32)

    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """(n, dim) float32 unit vectors, one per image (any PIL mode; converted to RGB).

        Images go through :func:`~app.ml.images.model_ready`: CLIP's resize of the short side
        would blow a 20x8000 photo up to tens of megapixels before its centre crop.
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        model, preprocess, _ = self._loaded()
        if not images:
            return np.empty((0, self.dim), dtype=np.float32)
        import torch

        chunks: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                batch = images[start : start + batch_size]
                pixels = torch.stack([preprocess(model_ready(img)) for img in batch])
                pixels = pixels.to(self.device, dtype=self._input_dtype())
                chunks.append(self._normalised(model.encode_image(pixels)))
        return np.concatenate(chunks)

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """(n, dim) float32 unit vectors, one per text (truncated to the model's context)."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        model, _, tokenizer = self._loaded()
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        import torch

        chunks: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                tokens = tokenizer(list(texts[start : start + batch_size])).to(self.device)
                chunks.append(self._normalised(model.encode_text(tokens)))
        return np.concatenate(chunks)
