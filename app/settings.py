"""The one settings object of the service (pydantic-settings, ``REPIC_`` prefix, ``__`` nesting).

Everything configurable lives here and is reached through :func:`get_settings`; nothing else
reads ``os.environ``. ``docs/configuration.md`` is generated from these classes
(``repic config docs``) and a test keeps it in sync.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
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
    pool_size: int = Field(10, description="Connection pool size (PostgreSQL only).")


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
        description="Signs session cookies and CSRF tokens. Must be set in production.",
    )
    session_max_age_s: int = Field(14 * 24 * 3600, description="Browser session lifetime.")
    token_ttl_days: int = Field(30, description="Lifetime of tokens from POST /api/auth/token.")
    allow_registration: bool = Field(True, description="Anyone may create an account.")
    min_password_length: int = Field(8, description="Shortest accepted password.")
    argon2_time_cost: int = Field(3, description="argon2 iterations per password hash.")
    argon2_memory_kib: int = Field(65536, description="argon2 memory per password hash, KiB.")


class EmbedderSettings(BaseModel):
    model_name: str = Field("ViT-L-14-336-quickgelu", description="open_clip model name.")
    pretrained: str = Field(
        "openai",
        description="Weights: an open_clip hub tag, a local .pt/.safetensors file "
        "or local-dir:/path.",
    )
    device: str = Field("cpu", description="cpu, cuda or cuda:N.")
    batch_size: int = Field(32, description="Images per embedding batch.")


class DetectorSettings(BaseModel):
    kind: Literal["owlv2", "none"] = Field(
        "owlv2", description="Open-vocabulary detector proposing crops; none = whole image only."
    )
    model: str = Field(
        "google/owlv2-base-patch16-ensemble", description="Hub id or local folder of the detector."
    )
    device: str = Field("cpu", description="cpu, cuda or cuda:N.")
    threshold: float = Field(0.1, description="Detection confidence threshold (paper: 0.1).")
    max_detections: int = Field(20, description="Most crops per image.")


class RetrievalSettings(BaseModel):
    k: int = Field(2, description="Unique concepts returned (paper: 2 for 1-2 concepts, 4 for 4).")
    max_k: int = Field(8, description="Largest k a caller may ask for.")
    top_k_per_crop: int = Field(5, description="Neighbours searched per crop before pooling.")
    min_score: float = Field(
        0.0,
        description="Cosine similarity below which a hit is dropped (see `repic index calibrate`).",
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


class CaptionSettings(BaseModel):
    backend: Literal["inprocess", "openai"] = Field(
        "inprocess", description="inprocess (transformers, embedded) or openai (vLLM server)."
    )
    model: str = Field(
        "Qwen/Qwen2.5-VL-7B-Instruct", description="Base model: hub id or local folder."
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
    timeout_s: float = Field(120.0, description="Per-request timeout to the caption server.")
    max_retries: int = Field(2, description="Retries on connection errors and 5xx.")
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
        48 * 3600, description="Broker visibility timeout; above the longest job."
    )
    max_attempts: int = Field(2, description="Deliveries of one job before it is failed.")
    heartbeat_s: int = Field(15, description="Job heartbeat period.")
    stale_after_s: int = Field(120, description="A running job silent this long is reaped.")
    reap_period_s: int = Field(
        30,
        ge=0,
        description="How often every app process reaps stale jobs (0: only workers reap). A "
        "job whose worker died ends within stale_after_s + reap_period_s.",
    )
    max_concurrent_training: int = Field(1, description="Training jobs allowed to run at once.")


class TrainingSettings(BaseModel):
    runs_dir: Path | None = Field(None, description="Training runs. Empty: <data_dir>/runs.")
    adapters_dir: Path | None = Field(
        None, description="Adapters shared with vLLM. Empty: <data_dir>/adapters."
    )
    default_config: Path | None = Field(None, description="YAML with trainer defaults.")


class EvaluationSettings(BaseModel):
    gate_margin_f1: float = Field(
        1.0, description="Refuse activation when F1 drops by more than this many points."
    )
    gate_set: str = Field("", description="Name of the evaluation set used by the gate.")


class LoggingSettings(BaseModel):
    level: str = Field("INFO", description="Log level.")
    json_logs: bool = Field(False, description="Emit JSON log lines.")


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
    logging: LoggingSettings = LoggingSettings()

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


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment (and `.env`)."""
    return Settings()
