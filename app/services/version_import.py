"""Importing a model made elsewhere as a version: a PEFT LoRA adapter folder (e.g. the RePIC
LoRA checkpoint) or a full merged model (e.g. ``Yeongtak/RePIC_Qwen2.5VL_7B``).

An adapter is checked before it is registered: PEFT LoRA, its base model is the one this
service serves, its weights file is there, and what it targets is said plainly. vLLM applies
LoRA to the language model's linear layers only: LoRA weights on the vision tower are ignored
there and an adapter on ``lm_head`` (or with ``modules_to_save``) is refused, so such an
adapter is best served in-process (``REPIC_CAPTION__BACKEND=inprocess``) or merged into the
base weights first (then imported as a merged model). The folder is copied into the adapters
directory, the one path the app, the workers and vLLM share. Imported versions are
candidates: evaluated, gated, activated and rolled back like trained ones.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.errors import InvalidInput
from app.models import ModelVersion
from app.services.versions import VersionService

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
VISION_KEY = re.compile(r"(^|\.)(visual|vision_tower|vision_model)\.")


@dataclass
class AdapterReport:
    """What an adapter folder holds, and what serving it will do."""

    base_model: str
    rank: int | None
    alpha: float | None
    target_modules: list[str] | str
    weights: str
    tensors: int
    vision_tower: bool
    lm_head: bool
    modules_to_save: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        return {
            "base_model": self.base_model, "rank": self.rank, "alpha": self.alpha,
            "target_modules": self.target_modules, "weights": self.weights,
            "tensors": self.tensors, "vision_tower": self.vision_tower,
            "lm_head": self.lm_head, "modules_to_save": self.modules_to_save,
            "notes": self.notes,
        }


def inspect_adapter(folder: Path) -> AdapterReport:
    """Read ``folder``'s PEFT config and weight names; ``InvalidInput`` names what is wrong."""
    config_path = folder / ADAPTER_CONFIG
    try:
        found = folder.is_dir() and config_path.is_file()
    except OSError:  # a name too long for the file system, a folder we may not read
        found = False
    if not found:
        raise InvalidInput(f"{folder} is not a PEFT adapter folder (no {ADAPTER_CONFIG})")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as exc:
        raise InvalidInput(f"{config_path} is not valid JSON: {exc}") from None
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise InvalidInput(f"{folder}: only LoRA adapters can be served "
                           f"(peft_type is {config.get('peft_type')!r})")
    weights = next((folder / w for w in ADAPTER_WEIGHTS if (folder / w).is_file()), None)
    if weights is None:
        raise InvalidInput(f"{folder} has no adapter weights ({' or '.join(ADAPTER_WEIGHTS)})")
    keys = _tensor_names(weights)
    modules_to_save = list(config.get("modules_to_save") or [])
    report = AdapterReport(
        base_model=str(config.get("base_model_name_or_path") or ""),
        rank=config.get("r"),
        alpha=config.get("lora_alpha"),
        target_modules=config.get("target_modules") or [],
        weights=weights.name,
        tensors=len(keys),
        vision_tower=any(VISION_KEY.search(k) for k in keys),
        lm_head=any("lm_head" in k for k in keys) or "lm_head" in modules_to_save,
        modules_to_save=modules_to_save,
    )
    if report.vision_tower:
        report.notes.append(
            "It also adapts the vision tower: vLLM applies LoRA to the language model only and "
            "ignores those weights. Serve it in-process (REPIC_CAPTION__BACKEND=inprocess) for "
            "its full effect, or merge it into the base weights and import the merged model."
        )
    if report.lm_head or modules_to_save:
        report.notes.append(
            "It changes lm_head or saves whole modules (modules_to_save): vLLM refuses such "
            "adapters. Serve it in-process, or merge it and import the merged model."
        )
    return report


def _tensor_names(weights: Path) -> list[str]:
    if weights.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as fh:
            return list(fh.keys())
    import torch

    return list(torch.load(weights, map_location="cpu", weights_only=True).keys())


def same_base(adapter_base: str, served: str) -> bool:
    """Whether an adapter trained on ``adapter_base`` fits the ``served`` base model: the same
    hub id, or folders/ids that end in the same ``org/name`` (a local copy of the hub model)."""
    def tail(name: str) -> list[str]:
        parts = [p for p in name.replace("\\", "/").rstrip("/").split("/") if p]
        return [p.lower() for p in parts[-2:]]

    a, b = tail(adapter_base), tail(served)
    if not a or not b:
        return False
    if len(a) == 2 and len(b) == 2:
        return a == b or Path(adapter_base).resolve() == Path(served).resolve()
    return a[-1] == b[-1]


def import_adapter(
    versions: VersionService,
    session: Session,
    folder: Path,
    adapters_dir: Path,
    *,
    name: str | None = None,
    allow_other_base: bool = False,
) -> tuple[ModelVersion, AdapterReport]:
    """Register ``folder`` as a candidate version (copied under ``adapters_dir``)."""
    folder = folder.expanduser().resolve()
    report = inspect_adapter(folder)
    if not same_base(report.base_model, versions.base_model) and not allow_other_base:
        raise InvalidInput(
            f"The adapter was trained on {report.base_model or 'an unnamed base'!r}, but this "
            f"service serves {versions.base_model!r}: its weights would not fit (pass "
            "--allow-other-base if the two are the same model under different names)"
        )
    label = _clean_label(name or folder.name)
    target = adapters_dir / f"{label}-{uuid.uuid4().hex[:8]}"
    adapters_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(folder, target)
    try:
        version = versions.register_candidate(
            session,
            name=label,
            adapter_path=str(target),
            base_model=versions.base_model,
            training_job_id=None,
            config={"imported_from": str(folder), "kind": "adapter", "adapter": report.public()},
            data_summary={"source": "imported adapter"},
        )
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return version, report


#: The length of ``model_versions.base_model``.
MAX_BASE_MODEL = 255


def import_merged_model(
    versions: VersionService, session: Session, model: str, *, name: str | None = None
) -> ModelVersion:
    """Register a full merged model (a hub id or a folder) as a base-model version.

    Serving it needs it to be the model the caption backend serves (vLLM's ``--model`` /
    ``REPIC_CAPTION__MODEL``): activation says so when it is not."""
    if not model.strip():
        raise InvalidInput("Name a merged model: a hub id (org/name) or a folder")
    if len(model) > MAX_BASE_MODEL:
        raise InvalidInput(f"A merged model is named in at most {MAX_BASE_MODEL} characters")
    local = Path(model).expanduser()
    try:
        is_folder = model.startswith(("/", ".", "~")) or local.exists()
        has_config = (local / "config.json").is_file()
    except OSError:  # a name too long for the file system, a folder we may not read
        is_folder, has_config = True, False
    if is_folder and not has_config:
        raise InvalidInput(f"{model} is not a model folder (no config.json)")
    label = _clean_label(name or model.rstrip("/").split("/")[-1])
    return versions.register_candidate(
        session,
        name=label,
        adapter_path=None,
        base_model=model,
        training_job_id=None,
        config={"imported_from": model, "kind": "merged"},
        data_summary={"source": "imported merged model"},
    )


def _clean_label(name: str) -> str:
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:80]
    if not label:
        raise InvalidInput("A version name needs letters or digits")
    return label
