"""Open-vocabulary detection: which regions of a query photo may show one of the user's concepts.

RePIC's retrieval (REPIC_SPEC.md) prompts an open-vocabulary detector with the *categories* of
the user's concepts ("dog", "mug"), crops each detection and embeds the crops. The paper used
YOLO-World at confidence 0.1; we use OWLv2 from transformers (same role, no extra dependency)
with the same 0.1 threshold by default. In the paper (and in ``retrieval.mode = "paper"``)
nothing detected means no demonstration; the service mode also searches the whole image
(:mod:`app.services.retrieval`).

``Detector`` is the base the retrieval service depends on (an :class:`~app.ml.base.InferenceModel`:
every detector has ``load()``, ``NoDetector`` included); ``build_detector`` picks the
implementation from the ``detector`` setting (``"owlv2"`` or ``"none"``).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from PIL import Image

from app.ml.base import InferenceModel
from app.ml.errors import ModelUnavailable

logger = logging.getLogger(__name__)

#: The real detector (about 155 M parameters); loaded from the hub cache or a local folder.
DEFAULT_OWL_MODEL = "google/owlv2-base-patch16-ensemble"
#: The paper's detector confidence threshold (YOLO-World, conf 0.1).
DEFAULT_THRESHOLD = 0.1
DEFAULT_MAX_DETECTIONS = 20
#: OWLv2's post-processing keeps every box above the threshold, many of them near-duplicates of
#: one object; per-label NMS at this IoU keeps one crop per object, as YOLO-World's NMS does.
DEFAULT_NMS_IOU = 0.3
PROMPT_TEMPLATE = "a photo of a {category}"
DETECTOR_KINDS = ("owlv2", "none")


@dataclass(frozen=True)
class Detection:
    """A box ``(x1, y1, x2, y2)`` in original-image pixels (x2/y2 exclusive, as PIL's crop)."""

    box: tuple[int, int, int, int]
    score: float
    label: str


StateT = TypeVar("StateT")


class Detector(InferenceModel[StateT]):
    """An open-vocabulary detector; :meth:`detect` is its ``predict()`` entry."""

    @property
    def signature(self) -> str:
        """What tells this detector's boxes apart from another's (the model and the settings
        that change its boxes): crops cached by concept discovery are keyed by it."""
        return type(self).__name__

    def detect(self, image: Image.Image, labels: Sequence[str]) -> list[Detection]:
        """Detections of the given category labels, best first.

        Blank and repeated labels are dropped; with none left, nothing is loaded or found.
        """
        categories = list(dict.fromkeys(label.strip() for label in labels if label.strip()))
        if not categories:
            return []
        return self._detect(self._loaded(), image, categories)

    @abc.abstractmethod
    def _detect(self, state: StateT, image: Image.Image, categories: list[str]) -> list[Detection]:
        """Detections of ``categories`` (non-empty, unique, stripped) with the loaded ``state``."""


class NoDetector(Detector[tuple[()]]):
    """The ``detector = "none"`` setting: retrieval then never finds a concept.

    It has no weights; ``load()`` exists (and does nothing) so callers treat every detector alike.
    """

    @property
    def signature(self) -> str:
        return "none"

    def _load(self) -> tuple[()]:
        return ()

    def _detect(
        self, state: tuple[()], image: Image.Image, categories: list[str]
    ) -> list[Detection]:
        return []


class _OwlParts(NamedTuple):
    model: Any
    processor: Any


def _offline_default() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


class OwlDetector(Detector[_OwlParts]):
    """OWLv2 (``Owlv2ForObjectDetection``) prompted with "a photo of a {category}"."""

    def __init__(
        self,
        model_path: str,
        device: str = "cpu",
        threshold: float = DEFAULT_THRESHOLD,
        max_detections: int = DEFAULT_MAX_DETECTIONS,
        nms_iou: float = DEFAULT_NMS_IOU,
        local_files_only: bool | None = None,
        image_size: int | None = None,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if max_detections <= 0:
            raise ValueError(f"max_detections must be positive, got {max_detections}")
        if image_size is not None and image_size < 32:
            raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
        self.model_path = str(model_path)
        self.device = device
        self.threshold = threshold
        self.max_detections = max_detections
        self.nms_iou = nms_iou
        # None: follow huggingface_hub's HF_HUB_OFFLINE; a local folder never needs the hub.
        self.local_files_only = local_files_only
        #: Side of the square the photo is resized to (None: the model's own, 960 for OWLv2);
        #: smaller is faster on a CPU (cost grows with its square), position embeddings are
        #: interpolated.
        self.image_size = image_size
        super().__init__()

    @property
    def signature(self) -> str:
        return (f"owlv2:{self.model_path}:t{self.threshold}:n{self.max_detections}"
                f":i{self.nms_iou}:s{self.image_size or 'native'}")

    def _load(self) -> _OwlParts:
        """Model and processor on ``device``. Raises ``ModelUnavailable``."""
        from transformers import Owlv2ForObjectDetection, Owlv2Processor

        path = Path(self.model_path).expanduser()
        if self.model_path.startswith(("/", ".", "~")) and not path.is_dir():
            raise ModelUnavailable(f"OWLv2 folder not found: {path}")
        local_only = self.local_files_only
        if local_only is None:
            local_only = Path(self.model_path).is_dir() or _offline_default()
        source = str(path) if path.is_dir() else self.model_path
        try:
            processor = Owlv2Processor.from_pretrained(source, local_files_only=local_only)
            model = Owlv2ForObjectDetection.from_pretrained(source, local_files_only=local_only)
        except (OSError, ValueError) as exc:
            # transformers raises OSError for missing files/offline misses, ValueError for
            # folders that hold something else.
            raise ModelUnavailable(f"cannot load OWLv2 from {self.model_path!r}: {exc}") from exc
        model.to(self.device).eval()  # type: ignore[arg-type]  # transformers' stub
        logger.info("loaded OWLv2 %s on %s", self.model_path, self.device)
        return _OwlParts(model, processor)

    def _detect(
        self, state: _OwlParts, image: Image.Image, categories: list[str]
    ) -> list[Detection]:
        import torch
        from torchvision.ops import batched_nms

        rgb = image.convert("RGB")
        width, height = rgb.size
        prompts = [PROMPT_TEMPLATE.format(category=c) for c in categories]
        native = int(state.model.config.vision_config.image_size)
        size = self.image_size or native
        extra: dict[str, Any] = {"size": {"height": size, "width": size}} if size != native else {}
        inputs = state.processor(
            text=[prompts], images=rgb, return_tensors="pt", truncation=True, **extra
        ).to(self.device)
        with torch.inference_mode():
            outputs = state.model(**inputs, interpolate_pos_encoding=size != native)
        result = state.processor.post_process_grounded_object_detection(
            outputs, threshold=self.threshold, target_sizes=[(height, width)]
        )[0]
        boxes, scores, label_idx = result["boxes"], result["scores"], result["labels"]
        if boxes.numel() == 0:
            return []
        keep = batched_nms(boxes.float(), scores.float(), label_idx, self.nms_iou)
        detections: list[Detection] = []
        for i in keep.tolist():
            x1, y1, x2, y2 = boxes[i].tolist()
            # Boxes may reach into OWLv2's square padding or past the border: clip to the photo.
            box = (
                min(max(round(x1), 0), width),
                min(max(round(y1), 0), height),
                min(max(round(x2), 0), width),
                min(max(round(y2), 0), height),
            )
            if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                continue
            detections.append(
                Detection(box=box, score=float(scores[i]), label=categories[int(label_idx[i])])
            )
            if len(detections) == self.max_detections:
                break
        return detections


def build_detector(
    kind: str,
    model_path: str | None = None,
    device: str = "cpu",
    threshold: float = DEFAULT_THRESHOLD,
    max_detections: int = DEFAULT_MAX_DETECTIONS,
    image_size: int | None = None,
) -> Detector[Any]:
    """The detector for the ``detector`` setting: ``"owlv2"`` or ``"none"``."""
    match kind:
        case "owlv2":
            return OwlDetector(
                model_path or DEFAULT_OWL_MODEL,
                device=device,
                threshold=threshold,
                max_detections=max_detections,
                image_size=image_size,
            )
        case "none":
            return NoDetector()
        case _:
            raise ValueError(
                f"unknown detector kind {kind!r}; allowed: {', '.join(DETECTOR_KINDS)}"
            )
