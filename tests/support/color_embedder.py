"""An embedder whose similarities a test controls: an image's vector is its mean colour, so
two red photos score about 1 and a red and a blue one about 0.3 (cosine of their RGB means).

It has what the index uses of :class:`app.ml.embedder.ClipEmbedder` (``embed_images``,
``model_id``, ``model_name``, ``pretrained``, ``dim``, ``device``, ``load``), so retrieval runs
its real code on it; the random tiny CLIP cannot serve here, its scores are all near 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image


class ColorEmbedder:
    model_name = "test-color"
    pretrained = None
    model_id = "test:mean-colour"
    dim = 3
    device = "cpu"

    def load(self) -> None:
        return None

    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        means = np.stack([np.asarray(img.convert("RGB"), dtype=np.float32).mean(axis=(0, 1))
                          for img in images]) + 1.0
        return (means / np.linalg.norm(means, axis=1, keepdims=True)).astype(np.float32)
