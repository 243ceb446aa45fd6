"""The one settings object of the service (pydantic-settings, ``REPIC_`` prefix, ``__`` nesting).

Everything configurable lives here and is reached through :func:`get_settings`; nothing else
reads ``os.environ``. ``docs/configuration.md`` is generated from these classes
(``repic config docs``) and a test keeps it in sync.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv import dotenv_values
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: The paper's image bound for Qwen2.5-VL, shared by serving and training (REPIC_SPEC.md §4).
PAPER_MAX_PIXELS = 1024 * 28 * 28
DEFAULT_MIN_PIXELS = 4 * 28 * 28


class DatabaseSettings(BaseModel):
    url: str = Field(
        "",
        description="SQLAlchemy URL. Empty: a SQLite file `repic.db` in the data directory. "
        "Production: postgresql+psycopg://user:pass@host:5432/db",
    )
    echo: bool = Field(False, description="Log every SQL statement.")
    pool_size: int = Field(10, ge=1, description="Connection pool size (PostgreSQL only).")


class StorageSettings(BaseModel):
    data_dir: Path = Field(
        Path("./data"),
        description="Root of everything the service writes: images, index cache, models, runs.",
    )
    max_upload_bytes: int = Field(20 * 1024 * 1024, description="Largest accepted image file.")
    max_files_per_upload: int = Field(
        12,
        ge=1,
        description="Most images in one upload request (concept photos; caption batches "
        "have their own limit).",
    )
    max_files_per_batch: int = Field(
        100,
        ge=1,
        description="Most photos in one caption batch (POST /api/captions/batch, "
        "captioned by a background job).",
    )
    max_image_pixels: int = Field(
        40_000_000, description="Largest accepted width*height (decompression-bomb guard)."
    )
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1,
        description="Largest request body without files (JSON, forms). A route that takes "
        "files allows this plus what its files may weigh (max_upload_bytes per photo).",
    )
    thumbnail_size: int = Field(256, description="Long side of generated thumbnails, pixels.")
    orphan_grace_s: int = Field(
        3600,
        ge=1,
        description="A stored file no row uses is swept once it is this old (younger ones may "
        "belong to a request still running).",
    )
    sweep_period_s: int = Field(
        3600, ge=0, description="How often every app process sweeps unused files (0: never)."
    )


class AuthSettings(BaseModel):
    secret_key: str = Field(
        "dev-insecure-secret-change-me",
        description="Derives the CSRF token of each browser session (the session cookie is "
        "a random id looked up in the database). Must be set in production.",
    )
    session_max_age_s: int = Field(
        14 * 24 * 3600,
        ge=60,
        description="Browser session lifetime from its login (logout, a password change and "
        "log out everywhere end it sooner).",
    )
    token_ttl_days: int = Field(30, description="Lifetime of tokens from POST /api/auth/token.")
    allow_registration: bool = Field(True, description="Anyone may create an account.")
    min_password_length: int = Field(8, description="Shortest accepted password.")
    argon2_time_cost: int = Field(3, description="argon2 iterations per password hash.")
    argon2_memory_kib: int = Field(65536, description="argon2 memory per password hash, KiB.")
    max_concurrent_password_hashes: int = Field(
        4,
        ge=1,
        description="argon2 hashes computed at once per app process (each takes "
        "argon2_memory_kib of memory); more wait for a free slot.",
    )
    password_hash_wait_s: float = Field(
        2.0,
        ge=0,
        description="How long a login waits for a free hashing slot before it is answered "
        "503 with Retry-After.",
    )
    login_failures_per_user: int = Field(
        5,
        ge=1,
        description="Failed logins of one username within login_window_s; the next attempt "
        "is 429 with Retry-After, without checking the password. A success resets the count.",
    )
    login_failures_per_address: int = Field(
        20,
        ge=1,
        description="Failed logins from one client address (IPv6: its /64) within "
        "login_window_s, over all usernames, before 429.",
    )
    login_window_s: int = Field(60, ge=1, description="Window of the failed-login counts.")
    login_block_s: int = Field(
        60,
        ge=1,
        description="First lockout once a failed-login limit is reached; each further lockout "
        "of the same name or address doubles it, up to login_max_block_s.",
    )
    login_max_block_s: int = Field(
        900,
        ge=1,
        description="Longest lockout; after this long without a lockout the doubling starts over.",
    )


#: The models of each profile. A profile fills in the model fields the configuration leaves
#: unset (an explicit REPIC_EMBEDDER__MODEL_NAME etc. always wins). ``cpu`` captions on a
#: laptop: a small CLIP (0.07 s per crop on 2 cores), no detector (whole image only) and a 3B
#: VLM; ``gpu`` is the paper's stack (ViT-L/14-336, OWLv2, Qwen2.5-VL-7B, usually via vLLM).
MODEL_PROFILES: dict[str, dict[str, dict[str, str]]] = {
    "cpu": {
        "embedder": {"model_name": "ViT-B-32-quickgelu", "pretrained": "openai"},
        "detector": {"kind": "none", "model": "google/owlv2-base-patch16-ensemble"},
        "caption": {"model": "Qwen/Qwen2.5-VL-3B-Instruct"},
    },
    "gpu": {
        "embedder": {"model_name": "ViT-L-14-336-quickgelu", "pretrained": "openai"},
        "detector": {"kind": "owlv2", "model": "google/owlv2-base-patch16-ensemble"},
        "caption": {"model": "Qwen/Qwen2.5-VL-7B-Instruct"},
    },
}


class ModelsSettings(BaseModel):
    profile: Literal["cpu", "gpu"] = Field(
        "cpu",
        description="Which models the unset model fields default to: cpu (ViT-B/32, no "
        "detector, Qwen2.5-VL-3B) or gpu (the paper's ViT-L/14-336, OWLv2, Qwen2.5-VL-7B).",
    )
    offline: bool = Field(
        True,
        description="The app and workers never download weights (a missing model is reported "
        "with `repic models pull`, which does); false lets them fetch on first use.",
    )


class EmbedderSettings(BaseModel):
    model_name: str = Field(
        "ViT-B-32-quickgelu", description="open_clip model name (default: the model profile's)."
    )
    pretrained: str = Field(
        "openai",
        description="Weights: an open_clip hub tag, a local .pt/.safetensors file "
        "or local-dir:/path.",
    )
    device: str = Field("cpu", description="cpu, cuda or cuda:N.")
    batch_size: int = Field(32, ge=1, description="Images per embedding batch.")


class DetectorSettings(BaseModel):
    kind: Literal["owlv2", "none"] = Field(
        "none",
        description="Open-vocabulary detector proposing crops (owlv2); none = no crops: the "
        "service retrieval searches the whole image only, the paper one finds nothing "
        "(default: the model profile's).",
    )
    model: str = Field(
        "google/owlv2-base-patch16-ensemble", description="Hub id or local folder of the detector."
    )
    device: str = Field("cpu", description="cpu, cuda or cuda:N.")
    threshold: float = Field(0.1, description="Detection confidence threshold (paper: 0.1).")
    max_detections: int = Field(
        20, ge=1, description="Most crops per photo (each is embedded: the CPU cost per crop)."
    )
    image_size: int | None = Field(
        None,
        ge=32,
        description="Side the detector resizes a photo to (empty: the model's own, 960 for "
        "OWLv2); 768 costs about two thirds of 960 on a CPU.",
    )


class RetrievalSettings(BaseModel):
    mode: Literal["service", "paper"] = Field(
        "service",
        description="service: detector crops and the whole image, unique concepts until k, "
        "the owner's threshold. paper: the original code's retrieval (REPIC_SPEC.md §8.4): "
        "detector crops only (nothing detected, no demonstration), k neighbours per crop in L2 "
        "order, unique reference images until k, no threshold unless a request passes one.",
    )
    k: int = Field(
        2, ge=1, description="Unique concepts returned (paper mode: unique reference photos; "
        "paper: 2 for 1-2 concepts, 4 for 4)."
    )
    max_k: int = Field(8, ge=1, description="Largest k a caller may ask for.")
    top_k_per_crop: int = Field(
        5, ge=1, description="Neighbours searched per crop before pooling (service mode; the "
        "paper mode searches k per crop)."
    )
    min_score: float | None = Field(
        None,
        description="Cosine similarity below which a hit is dropped. Empty (default): each "
        "owner's threshold is calibrated from their own photos (leave-one-out), refreshed when "
        "their photos change; a number fixes it for everyone (a request may still pass its own).",
    )
    min_score_floor: float | None = Field(
        None,
        description="The threshold of an owner with too few photos to calibrate. Empty: the "
        "embedder's known range (docs/architecture.md), 0.5 for an unknown embedder.",
    )
    background_embedding: bool = Field(
        False,
        description="Embed newly registered photos in a cpu-queue job instead of in the "
        "request (they become searchable when it finishes); for slow embedders on CPU.",
    )
    approx_threshold: int | None = Field(
        None,
        description="Owners with more images than this get an approximate (HNSW) index; "
        "empty = always exact.",
    )

    @model_validator(mode="after")
    def _k_within_max_k(self) -> RetrievalSettings:
        # Retrieval refuses a k above max_k, so a larger default would fail every request.
        if self.k > self.max_k:
            raise ValueError(
                f"REPIC_RETRIEVAL__K={self.k} must not exceed REPIC_RETRIEVAL__MAX_K={self.max_k}"
            )
        return self


class CaptionSettings(BaseModel):
    backend: Literal["inprocess", "openai"] = Field(
        "inprocess", description="inprocess (transformers, embedded) or openai (vLLM server)."
    )
    model: str = Field(
        "Qwen/Qwen2.5-VL-3B-Instruct",
        description="Base model: hub id or local folder (default: the model profile's).",
    )
    device: str = Field("cpu", description="Device of the in-process backend.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype of the in-process backend."
    )
    openai_base_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://127.0.0.1:8001"],
        description="OpenAI-compatible servers (vLLM replicas), comma separated or JSON list.",
    )
    openai_api_key: str = Field("", description="Bearer key for the vLLM servers, if any.")
    server_kind: Literal["vllm", "generic"] = Field(
        "vllm", description="vllm, or generic (never send vLLM-only fields such as top_k)."
    )
    timeout_s: float = Field(
        120.0, gt=0, description="Per-request timeout to the caption server."
    )
    max_retries: int = Field(2, ge=0, description="Retries on connection errors and 5xx.")
    max_demonstrations: int = Field(4, description="Most reference images in one prompt.")
    max_new_tokens: int = Field(
        1024, ge=1, le=4096, description="Default generation length (paper: 1024)."
    )
    min_pixels: int = Field(DEFAULT_MIN_PIXELS, description="Image pixel lower bound.")
    max_pixels: int = Field(
        PAPER_MAX_PIXELS, description="Image pixel upper bound, same as training (1024*28*28)."
    )

    @field_validator("openai_base_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            return [u.strip() for u in value.split(",") if u.strip()]
        return value


class WorkerSettings(BaseModel):
    broker_url: str = Field(
        "",
        description="Celery broker. Empty: an embedded SQLite broker in the data directory.",
    )
    result_backend: str = Field("", description="Celery result backend. Empty: follows broker.")
    embedded_worker: bool = Field(
        True, description="`repic serve` starts a local worker when the broker is embedded."
    )
    visibility_timeout_s: int = Field(
        48 * 3600, ge=1, description="Broker visibility timeout; above the longest job."
    )
    max_attempts: int = Field(2, ge=1, description="Deliveries of one job before it is failed.")
    heartbeat_s: int = Field(15, ge=1, description="Job heartbeat period.")
    stale_after_s: int = Field(
        120,
        ge=1,
        description="A running job silent this long is reaped; at least twice heartbeat_s.",
    )
    reap_period_s: int = Field(
        30,
        ge=0,
        description="How often every app process reaps stale jobs (0: only workers reap). A "
        "job whose worker died ends within stale_after_s + reap_period_s.",
    )
    max_concurrent_training: int = Field(
        1, ge=1, description="Training jobs allowed to run at once."
    )

    @model_validator(mode="after")
    def _stale_after_spans_heartbeats(self) -> WorkerSettings:
        # One late heartbeat (a GC pause, a slow commit) must not get a live job reaped.
        if self.stale_after_s < 2 * self.heartbeat_s:
            raise ValueError(
                f"REPIC_WORKER__STALE_AFTER_S={self.stale_after_s} must be at least twice "
                f"REPIC_WORKER__HEARTBEAT_S={self.heartbeat_s}, or live jobs get reaped"
            )
        return self


class TrainingSettings(BaseModel):
    runs_dir: Path | None = Field(None, description="Training runs. Empty: <data_dir>/runs.")
    adapters_dir: Path | None = Field(
        None, description="Adapters shared with vLLM. Empty: <data_dir>/adapters."
    )
    default_config: Path | None = Field(None, description="YAML with trainer defaults.")
    detector_boxes: bool = Field(
        True,
        description="Give VLT records the detector's box (detector.kind, prompted with the "
        "concept's category) on photos without an owner-set box; with none, VLT falls back to "
        "composites.",
    )


class EvaluationSettings(BaseModel):
    gate_margin_f1: float = Field(
        1.0, description="Refuse activation when F1 drops by more than this many points."
    )
    gate_set: str = Field("", description="Name of the evaluation set used by the gate.")


class LibrarySettings(BaseModel):
    discovery_period_s: int = Field(
        86400,
        ge=0,
        description="Concept discovery in the background (\"nightly\"): a library with photos "
        "imported since its last discovery gets a discovery job once that one is this old "
        "(queued by the app processes' maintenance thread, which checks every 10 minutes at "
        "most). 0: only on demand, from the library page, the API or `repic library discover`.",
    )
    discovery_min_cluster_size: int = Field(
        5,
        ge=2,
        description="Fewest photos of one unnamed subject that discovery proposes as a new "
        "concept (HDBSCAN's min_cluster_size).",
    )
    discovery_categories: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["person", "animal", "pet", "toy", "object"],
        description="What the detector is asked to find in library photos for discovery "
        "(comma separated or a JSON list); unused with detector.kind = none, where the whole "
        "photo is the one crop.",
    )
    discovery_max_crops: int = Field(
        4, ge=1, description="Most detector crops per photo that discovery embeds (best first)."
    )

    @field_validator("discovery_categories", mode="before")
    @classmethod
    def _split_categories(cls, value: object) -> object:
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            return [c.strip() for c in value.split(",") if c.strip()]
        return value


class LoggingSettings(BaseModel):
    level: str = Field("INFO", description="Log level.")
    json_logs: bool = Field(False, description="Emit JSON log lines.")


class MetricsSettings(BaseModel):
    token: str = Field(
        "",
        description="Bearer token that /metrics requires (`Authorization: Bearer <token>`); "
        "it also shows /api/ready's details. Empty: /metrics is open, so keep it off the "
        "public side of the proxy.",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="REPIC_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    profile: Literal["embedded", "production"] = Field(
        "embedded",
        description="embedded: missing real models fall back to tiny ones with a warning; "
        "production: a missing model is a start-up error.",
    )
    base_url: str = Field("http://127.0.0.1:8000", description="Public URL of the app.")
    tiny_models_dir: Path | None = Field(
        None, description="Where tiny offline models are built. Empty: <data_dir>/models/tiny."
    )
    models: ModelsSettings = ModelsSettings()
    database: DatabaseSettings = DatabaseSettings()
    storage: StorageSettings = StorageSettings()
    auth: AuthSettings = AuthSettings()
    embedder: EmbedderSettings = EmbedderSettings()
    detector: DetectorSettings = DetectorSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    caption: CaptionSettings = CaptionSettings()
    worker: WorkerSettings = WorkerSettings()
    training: TrainingSettings = TrainingSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    library: LibrarySettings = LibrarySettings()
    logging: LoggingSettings = LoggingSettings()
    metrics: MetricsSettings = MetricsSettings()

    @model_validator(mode="after")
    def _apply_model_profile(self) -> Settings:
        for group, values in MODEL_PROFILES[self.models.profile].items():
            current = getattr(self, group)
            unset = {k: v for k, v in values.items() if k not in current.model_fields_set}
            if unset:
                setattr(self, group, current.model_copy(update=unset))
        return self

    @model_validator(mode="after")
    def _production_needs_secrets(self) -> Settings:
        if self.profile == "production" and self.auth.secret_key.startswith("dev-insecure"):
            raise ValueError(
                "REPIC_AUTH__SECRET_KEY must be set to a random secret "
                "when REPIC_PROFILE=production"
            )
        return self

    @property
    def data_dir(self) -> Path:
        return self.storage.data_dir.resolve()

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'repic.db'}"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def library_staging_dir(self) -> Path:
        """Browser uploads of a library import, until its job has read them."""
        return self.data_dir / "library-imports"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def tiny_dir(self) -> Path:
        return (self.tiny_models_dir or self.data_dir / "models" / "tiny").resolve()

    @property
    def runs_dir(self) -> Path:
        return (self.training.runs_dir or self.data_dir / "runs").resolve()

    @property
    def adapters_dir(self) -> Path:
        return (self.training.adapters_dir or self.data_dir / "adapters").resolve()

    @property
    def broker_url(self) -> str:
        return self.worker.broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.db'}"

    @property
    def result_backend(self) -> str:
        if self.worker.result_backend:
            return self.worker.result_backend
        if self.worker.broker_url.startswith("redis"):
            return self.worker.broker_url
        return f"db+sqlite:///{self.data_dir / 'results.db'}"


ENV_PREFIX = "REPIC_"

#: ``REPIC_`` names the project reads outside these settings: never reported as unknown.
NOT_SETTINGS = frozenset(
    {
        "REPIC_ADMIN_PASSWORD",  # repic users create-admin
        "REPIC_ADMIN_TOKEN",  # repic index verify --app
        "REPIC_PULL_MODELS",  # docker/prestart.sh
        # docker-compose.yml's own variables (its .env file), which it maps onto settings.
        "REPIC_SECRET_KEY",
        "REPIC_BASE_MODEL",
        "REPIC_IMAGE_TAG",
    }
)
#: Prefixes of names only the test suite and its scripts read.
NOT_SETTINGS_PREFIXES = ("REPIC_TEST_",)

_SECRET_NAME = re.compile(r"(?:^|_)(?:key|secret|password|token)(?:_|$)", re.IGNORECASE)
# scheme://user:password@host: greedy up to the last "@" before the path.
_URL_PASSWORD = re.compile(r"(?<=://)([^/:@\s]*):([^/\s]*)@")


class SettingsError(ValueError):
    """Settings the service cannot run with: one ``REPIC_NAME=value: problem`` per line."""


def is_secret_name(name: str) -> bool:
    """Whether a field called ``name`` holds a secret (``secret_key``, ``openai_api_key``,
    ``token``, ``password``; not ``max_new_tokens`` or ``token_ttl_days``'s number)."""
    return bool(_SECRET_NAME.search(name))


def mask_url_passwords(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` replaced by ***."""
    return _URL_PASSWORD.sub(r"\1:***@", text)


def redacted(data: Any, name: str = "") -> Any:
    """A ``model_dump(mode="json")`` of the settings fit to print: string fields named like a
    secret become ``***`` (empty stays empty, so an unset secret shows as unset) and URL
    passwords are masked everywhere."""
    if isinstance(data, dict):
        return {key: redacted(value, key) for key, value in data.items()}
    if isinstance(data, list):
        return [redacted(item, name) for item in data]
    if isinstance(data, str):
        if is_secret_name(name):
            return "***" if data else ""
        return mask_url_passwords(data)
    return data


def setting_names(model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX) -> set[str]:
    """Every environment name the settings read (upper case): each field, and each group
    under its own name too (a group accepts a JSON object)."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        env_name = f"{prefix}{name.upper()}"
        names.add(env_name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            names |= setting_names(field.annotation, f"{env_name}__")
    return names


def unknown_settings(environ: Mapping[str, str], env_file: Path | None = None) -> list[str]:
    """A warning for every ``REPIC_`` name in ``environ`` (and in ``env_file``) that no
    setting reads, with the closest known name: pydantic-settings ignores them silently, so
    ``REPIC_DATABASE_URL`` (one underscore) would start the app on SQLite without a word."""
    known = setting_names()
    found = [(name, "") for name in environ]
    if env_file is not None and env_file.is_file():
        found += [(name, f" in {env_file}") for name in dotenv_values(env_file)]
    warnings: list[str] = []
    for name, where in found:
        upper = name.upper()
        if (
            not upper.startswith(ENV_PREFIX)
            or upper in known
            or upper in NOT_SETTINGS
            or upper.startswith(NOT_SETTINGS_PREFIXES)
        ):
            continue
        guess = difflib.get_close_matches(upper, sorted(known), n=1, cutoff=0.75)
        hint = f"; did you mean {guess[0]}?" if guess else " (docs/configuration.md lists them)"
        warnings.append(f"{name}{where} is not a setting and is ignored{hint}")
    return warnings


def environment_warnings() -> list[str]:
    """:func:`unknown_settings` of this process: its environment and the settings' ``.env``.
    The app, the worker and the CLI report them once at start."""
    env_file = Settings.model_config.get("env_file")
    return unknown_settings(os.environ, Path(env_file) if isinstance(env_file, str) else None)


def _problem(error: ErrorDetails) -> str:
    message = error["msg"].removeprefix("Value error, ")
    path: list[str] = []
    for part in error["loc"]:
        if not isinstance(part, str):
            break  # a list index: the variable is the list's
        path.append(part)
    if ENV_PREFIX in message or not path:
        return message  # our validators name their variables themselves
    value = error.get("input")
    shown = ""
    if isinstance(value, str | int | float | bool) and not is_secret_name(path[-1]):
        text = mask_url_passwords(str(value))
        shown = f"={text}" if len(text) <= 80 else f"={text[:77]}..."
    return f"{ENV_PREFIX}{'__'.join(p.upper() for p in path)}{shown}: {message}"


def load_settings(env_file: Path | str | None = ".env") -> Settings:
    """Settings from the environment (and ``env_file``); values the service cannot run with
    are a :class:`SettingsError` naming each variable, one line per problem."""
    try:
        return Settings(_env_file=env_file)
    except ValidationError as exc:
        raise SettingsError("\n".join(_problem(e) for e in exc.errors())) from None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment (and `.env`); raises
    :class:`SettingsError` on values the service cannot run with."""
    return load_settings()
