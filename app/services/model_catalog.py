"""The models the configuration names, where they are, and getting them (``repic models``).

Each configured model (caption model, embedder, detector) is either a local path, used as it
is, or a Hugging Face Hub repository, kept in the hub's own cache (``HF_HOME`` /
``HF_HUB_CACHE``). The app never downloads: at start a model that is not in the cache is
reported with the command that fetches it, and a tiny stand-in serves meanwhile (embedded
profile). ``repic models pull`` downloads what is missing: sizes first, a free-space check, a
progress bar per file (resumable, the hub client verifies sizes and checksums), idempotent.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.settings import MODEL_PROFILES, Settings

log = logging.getLogger(__name__)

#: What a transformers model folder needs (weights as safetensors only; no duplicates).
TRANSFORMERS_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"]
#: An open_clip checkpoint on the hub (config + one weights file).
OPEN_CLIP_FILES = ["open_clip_config.json", "open_clip_model.safetensors"]
#: Head room kept free on the disk after a download.
DISK_MARGIN = 1.05
PULL_COMMAND = "repic models pull"


@dataclass
class ModelEntry:
    """One model the configuration names."""

    role: str  # caption, embedder, detector
    name: str  # as configured (hub id, open_clip name:tag, or a path)
    repo_id: str | None = None  # hub repository to fetch, None for local paths
    files: list[str] = field(default_factory=list)  # allow_patterns for the download
    local_path: Path | None = None


@dataclass
class ModelState:
    entry: ModelEntry
    present: bool
    where: str | None
    size_bytes: int | None
    fix: str | None  # the one command that fixes a missing model

    def public(self, loaded: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "role": self.entry.role,
            "name": self.entry.name,
            "repo_id": self.entry.repo_id,
            "present": self.present,
            "where": self.where,
            "size_bytes": self.size_bytes,
            "loaded": (loaded or {}).get(self.entry.role),
            "fix": self.fix,
        }


def _local(name: str) -> Path | None:
    for prefix in ("local-dir:",):
        if name.startswith(prefix):
            return Path(name[len(prefix):]).expanduser()
    path = Path(name).expanduser()
    return path if (name.startswith(("/", ".", "~")) or path.exists()) else None


def configured_models(settings: Settings) -> list[ModelEntry]:
    """The caption model (in-process backend; vLLM fetches its own), the embedder and the
    detector that ``settings`` name."""
    entries: list[ModelEntry] = []
    caption = settings.caption
    if caption.backend == "inprocess":
        entries.append(transformers_entry("caption", caption.model))
    entries.append(embedder_entry(settings.embedder.model_name, settings.embedder.pretrained))
    if settings.detector.kind != "none":
        entries.append(transformers_entry("detector", settings.detector.model))
    return entries


def profile_models(profile: str) -> list[ModelEntry]:
    """The models a profile of ``MODEL_PROFILES`` names (``repic models pull gpu``)."""
    values = MODEL_PROFILES[profile]
    entries = [
        transformers_entry("caption", values["caption"]["model"]),
        embedder_entry(values["embedder"]["model_name"], values["embedder"]["pretrained"]),
    ]
    if values["detector"]["kind"] != "none":
        entries.append(transformers_entry("detector", values["detector"]["model"]))
    return entries


def transformers_entry(role: str, name: str) -> ModelEntry:
    local = _local(name)
    if local is not None:
        return ModelEntry(role, name, local_path=local)
    return ModelEntry(role, name, repo_id=name, files=list(TRANSFORMERS_FILES))


def embedder_entry(model_name: str, pretrained: str | None) -> ModelEntry:
    """An open_clip model: ``local-dir:``/a weights file, ``hf-hub:org/repo``, or a built-in
    name with a weights tag (whose hub repository open_clip knows)."""
    label = f"{model_name}:{pretrained}" if pretrained else model_name
    for candidate in (model_name, pretrained or ""):
        local = _local(candidate) if candidate else None
        if local is not None:
            return ModelEntry("embedder", label, local_path=local)
    if model_name.startswith("hf-hub:"):
        return ModelEntry("embedder", label, repo_id=model_name.removeprefix("hf-hub:"),
                          files=list(OPEN_CLIP_FILES))
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, pretrained or "") or {}
    hub = str(cfg.get("hf_hub") or "").strip("/")
    return ModelEntry("embedder", label, repo_id=hub or None, files=list(OPEN_CLIP_FILES))


def model_state(entry: ModelEntry) -> ModelState:
    """Where ``entry`` is on this machine (never touches the network)."""
    if entry.local_path is not None:
        present = entry.local_path.exists()
        return ModelState(entry, present, str(entry.local_path),
                          _size(entry.local_path) if present else None,
                          None if present else f"the path {entry.local_path} does not exist")
    if entry.repo_id is None:
        return ModelState(entry, False, None, None,
                          f"{entry.name} has no download source: set a local path")
    snapshot = cached_snapshot(entry)
    if snapshot is None:
        return ModelState(entry, False, None, None, f"{PULL_COMMAND} {entry.repo_id}")
    return ModelState(entry, True, str(snapshot), _size(snapshot), None)


def cached_snapshot(entry: ModelEntry) -> Path | None:
    """The hub cache's snapshot folder of ``entry`` when every file it needs is there."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    assert entry.repo_id is not None
    try:
        folder = Path(snapshot_download(entry.repo_id, allow_patterns=entry.files,
                                        local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    if not any(p.suffix == ".safetensors" for p in folder.rglob("*")):
        return None  # only the small files came: weights still missing
    return folder


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- pulling -------------------------------------------------------------------------------

class NotEnoughSpace(RuntimeError):
    pass


@dataclass
class PullPlan:
    entry: ModelEntry
    files: list[tuple[str, int]]  # (file, bytes) still to download
    commit: str

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.files)


def plan_pull(entry: ModelEntry) -> PullPlan:
    """What downloading ``entry`` would fetch (asks the hub; downloads nothing)."""
    from huggingface_hub import snapshot_download

    assert entry.repo_id is not None
    dry = snapshot_download(entry.repo_id, allow_patterns=entry.files, dry_run=True)
    todo = [(f.filename, int(f.file_size or 0)) for f in dry if f.will_download]
    commit = dry[0].commit_hash if dry else ""
    return PullPlan(entry, sorted(todo), commit)


def hub_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def check_space(plans: Sequence[PullPlan], cache: Path) -> None:
    need = int(sum(p.bytes for p in plans) * DISK_MARGIN)
    probe = cache
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need > free:
        raise NotEnoughSpace(
            f"the download needs {_human(need)} and {probe} has {_human(free)} free: free some "
            "space or point HF_HOME at a larger disk"
        )


def pull(plan: PullPlan) -> Path:
    """Download what ``plan`` lists (progress bars on stderr; resumes partial files), then
    verify every file against the hub's checksums."""
    from huggingface_hub import HfApi, snapshot_download

    assert plan.entry.repo_id is not None
    folder = Path(snapshot_download(plan.entry.repo_id, allow_patterns=plan.entry.files,
                                    revision=plan.commit or None))
    report = HfApi().verify_repo_checksums(plan.entry.repo_id, revision=plan.commit or None)
    wanted = {name for name, _ in plan.files}
    bad = [m for m in report.mismatches if getattr(m, "path", m) in wanted]
    if bad:
        raise RuntimeError(f"{plan.entry.repo_id}: checksum mismatch for {bad}")
    return folder


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


human_size: Callable[[float], str] = _human


def force_offline() -> None:
    """No download from this process (``models.offline``): the environment for libraries not
    imported yet, and huggingface_hub's constant when it already is."""
    import os
    import sys

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]


def models_report(settings: Settings, loaded: dict[str, dict[str, Any]],
                  warnings: Sequence[str]) -> dict[str, Any]:
    """What ``/api/admin/models``, the admin Models page and ``repic models status`` show."""
    roles = {"caption": "caption", "embedder": "embedder", "detector": "detector"}
    models = []
    for entry in configured_models(settings):
        state = model_state(entry)
        serving = loaded.get(roles[entry.role], {})
        item = state.public()
        item["loaded"] = bool(serving) and not serving.get("tiny") and not str(
            serving.get("kind", "")).endswith("(fallback)")
        item["stand_in"] = bool(serving.get("tiny"))
        models.append(item)
    return {
        "profile": settings.models.profile,
        "offline": settings.models.offline,
        "cache_dir": str(hub_cache_dir()),
        "models": models,
        "warnings": list(warnings),
        "pull_command": PULL_COMMAND,
    }
