"""Endpoints, paths and secrets, read once from the environment and `.env`.

Every default lives here and nowhere else. Hyperparameters are not settings: they are typed run
parameters (`nfl_mlops.modeling.params`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


def _plain(value: SecretStr | str | None) -> str | None:
    """A secret URL's text (also when a copy made with `model_copy(update=...)` holds a plain string)."""
    return value.get_secret_value() if isinstance(value, SecretStr) else value


class Settings(BaseSettings):
    """Configuration of every component; each external service has an embedded default."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    # Paths and state
    mlops_home: Path = Field(
        Path(".mlops"),
        validation_alias=_env("MLOPS_HOME"),
        description="Root of all local state (DB, models, runs, reports).",
    )
    models_dir: Path | None = Field(
        None,
        validation_alias=_env("MODELS_DIR"),
        description="Model versions in Hugging Face layout; default MLOPS_HOME/models.",
    )
    deployments_dir: Path | None = Field(
        None,
        validation_alias=_env("DEPLOYMENTS_DIR"),
        description="Rollout records and reports; default MLOPS_HOME/deployments.",
    )
    database_url: SecretStr | None = Field(
        None,
        validation_alias=_env("MLOPS_DATABASE_URL"),
        description="SQLAlchemy URL of the state DB; default a SQLite file under MLOPS_HOME. A secret (it may "
        "carry a password): masked wherever it is shown.",
    )
    redis_url: SecretStr | None = Field(
        None,
        validation_alias=_env("MLOPS_REDIS_URL"),
        description="Redis for the prediction cache; default an in-process LRU. A secret, like the DB URL.",
    )

    # Access to the API
    api_key: SecretStr | None = Field(
        None,
        validation_alias=_env("MLOPS_API_KEY"),
        description="Key (header X-API-Key) required by mutating /mlops endpoints and by reads that reveal "
        "internals. Without it the API answers loopback clients only (see MLOPS_ALLOW_NO_AUTH).",
    )
    allow_no_auth: bool = Field(
        False,
        validation_alias=_env("MLOPS_ALLOW_NO_AUTH"),
        description="Serve clients on other hosts although MLOPS_API_KEY is unset (everything open to them).",
    )
    open_endpoints: Annotated[frozenset[Literal["health", "predictions", "reads"]], NoDecode] = Field(
        frozenset({"health", "predictions"}),
        validation_alias=_env("MLOPS_OPEN_ENDPOINTS"),
        description="Comma-separated groups answered without the key when one is set: `health` (probes, "
        "/metrics), `predictions` (scoring), `reads` (registry, deployments, experiments, lineage, status, "
        "reports, jobs). Mutations always need the key.",
    )
    import_roots: Annotated[tuple[Path, ...], NoDecode] = Field(
        (),
        validation_alias=_env("MLOPS_IMPORT_ROOTS"),
        description="Comma-separated folders below which `POST /models/register` may read a model folder "
        "(symbolic links refused); default MLOPS_HOME.",
    )

    # Model store
    artifact_uri: str | None = Field(
        None,
        validation_alias=_env("MLOPS_ARTIFACT_URI"),
        description="Where registered versions are stored for every process to load: unset = the local "
        "MODELS_DIR (one host); `s3://bucket/prefix` (any S3-compatible store through s3fs: credentials from "
        "the standard AWS variables or boto config, endpoint MLOPS_S3_ENDPOINT_URL) or `hf://org/repo` (the "
        "Hugging Face Hub, one immutable tag `v{N}` per version, HUGGINGFACE_TOKEN). Every process resolves a "
        "version into MLOPS_HOME/cache/artifacts, verified by sha256 (`registry.artifacts`).",
    )
    s3_endpoint_url: str | None = Field(
        None,
        validation_alias=_env("MLOPS_S3_ENDPOINT_URL"),
        description="Endpoint of an S3-compatible store that is not AWS (MinIO, Ceph, R2, ...); default AWS.",
    )

    # Model
    model_name: str = Field("nfl-sentiment", validation_alias=_env("MLOPS_MODEL_NAME"))
    base_model: str = Field(
        "sentence-transformers/all-MiniLM-L6-v2",
        validation_alias=_env("MLOPS_BASE_MODEL"),
        description="Hub id; the MiniLM default resolves offline to the packaged copy.",
    )

    # Hugging Face
    huggingface_token: SecretStr | None = Field(None, validation_alias=_env("HUGGINGFACE_TOKEN", "HF_TOKEN"))
    huggingface_repo: str | None = Field(
        None,
        validation_alias=_env("HUGGINGFACE_REPO"),
        description="Hub repo that mirrors the registry (e.g. org/nfl-sentiment).",
    )
    huggingface_private: bool = Field(
        True, validation_alias=_env("HUGGINGFACE_PRIVATE"), description="Create the mirror repo as private."
    )
    huggingface_endpoint: str | None = Field(
        None,
        validation_alias=_env("HF_ENDPOINT", "HUGGINGFACE_ENDPOINT"),
        description="Hub URL; default huggingface.co (set for a private Hub).",
    )

    # Weights & Biases
    wandb_api_key: SecretStr | None = Field(None, validation_alias=_env("WANDB_API_KEY"))
    wandb_project: str = Field("nfl-sentiment-analyzer", validation_alias=_env("WANDB_PROJECT"))
    wandb_entity: str | None = Field(None, validation_alias=_env("WANDB_ENTITY"))

    # Hopsworks
    hopsworks_api_key: SecretStr | None = Field(None, validation_alias=_env("HOPSWORKS_API_KEY"))
    hopsworks_project: str = Field("nfl-sentiment-analyzer", validation_alias=_env("HOPSWORKS_PROJECT"))
    hopsworks_host: str = Field("https://c.app.hopsworks.ai", validation_alias=_env("HOPSWORKS_HOST"))

    # Hyperparameter search
    optuna_storage: SecretStr | None = Field(
        None,
        validation_alias=_env("MLOPS_OPTUNA_STORAGE"),
        description="Optuna storage URL; default a SQLite file under MLOPS_HOME. A secret, like the DB URL.",
    )

    # Serving
    max_text_chars: int = Field(2000, validation_alias=_env("MLOPS_MAX_TEXT_CHARS"))
    max_batch_items: int = Field(
        256,
        validation_alias=_env("MLOPS_MAX_BATCH_ITEMS"),
        description="Most texts one /predict/sentiment/batch request may carry.",
    )
    max_batch_size: int = Field(
        64,
        validation_alias=_env("MLOPS_MAX_BATCH_SIZE"),
        description="Most texts the dynamic batcher puts into one forward pass.",
    )
    max_wait_ms: float = Field(
        5.0,
        validation_alias=_env("MLOPS_MAX_WAIT_MS"),
        description="Longest the batcher holds a batch open for more requests; it waits only "
        "while the batch is smaller than the last one (bench/README.md).",
    )
    max_queued_texts: int = Field(
        1024,
        ge=1,
        validation_alias=_env("MLOPS_MAX_QUEUED_TEXTS"),
        description="Most texts waiting for the model (per version) before requests are shed with 503 and "
        "Retry-After (about 5 s of work at this model's batched throughput here).",
    )
    max_queue_wait_s: float = Field(
        10.0,
        gt=0,
        validation_alias=_env("MLOPS_MAX_QUEUE_WAIT_S"),
        description="A request that waited this long for its forward pass is answered 503 instead.",
    )
    max_spooled_rows: int = Field(
        100_000,
        ge=1,
        validation_alias=_env("MLOPS_MAX_SPOOLED_ROWS"),
        description="Most prediction-log rows waiting in the spool for the state DB (an outage); beyond it "
        "predictions are answered 503 with Retry-After rather than logged nowhere.",
    )
    durable_predictions: bool = Field(
        True,
        validation_alias=_env("MLOPS_DURABLE_PREDICTIONS"),
        description="Answer a prediction only after its log row is fsynced in the spool (MLOPS_HOME/spool), "
        "one fsync per group of concurrent rows; false: rows wait in memory for the next DB write "
        "(a crash loses up to half a second of them).",
    )
    api_url: str | None = Field(
        None,
        validation_alias=_env("MLOPS_API_URL"),
        description="Base URL of the serving API; the deployment flow waits until it serves a new version.",
    )
    api_host: str = Field(
        "127.0.0.1",
        validation_alias=_env("MLOPS_API_HOST"),
        description="Interface `nfl-mlops serve` and the local stack bind the API to.",
    )
    api_port: int = Field(
        8000,
        ge=1,
        le=65535,
        validation_alias=_env("MLOPS_API_PORT"),
        description="Port of the serving API (`serve`, `up`, `demo`; another free one when taken).",
    )
    inference_backend: Literal["auto", "torch", "onnx", "onnx-int8"] = Field(
        "auto",
        validation_alias=_env("MLOPS_INFERENCE_BACKEND"),
        description="Runtime the API serves a version with: `auto` = the fastest variant admitted at its "
        "registration (ONNX int8, then ONNX fp32, then torch; torch on CUDA); a variant the version lacks "
        "falls back to torch, logged.",
    )
    torch_threads: int = Field(
        0,
        ge=0,
        le=1024,
        validation_alias=_env("MLOPS_TORCH_THREADS"),
        description="Intra-op threads of torch inference and training; 0 = every core.",
    )
    rollout_poll_seconds: float = Field(
        1.0,
        validation_alias=_env("MLOPS_ROLLOUT_POLL_SECONDS"),
        description="How often an API process re-reads the active rollout.",
    )
    gate_behaviour: bool = Field(
        True,
        validation_alias=_env("MLOPS_GATE_BEHAVIOUR"),
        description="Whether the registration gate runs the behavioural tests (`registry.behaviour`) when the "
        "flow's `GateParams.behaviour` is left unset. Off only where every registered model is a toy (the "
        "test suite's models, a few hundred rows for one epoch, learn too little to pass them).",
    )

    # Labelling under a budget (monitoring.labeling)
    labeling_budget: int = Field(
        200,
        ge=0,
        validation_alias=_env("MLOPS_LABELING_BUDGET"),
        description="Served predictions an episode queues for human labelling (uncertain and diverse); "
        "0 = no queue.",
    )
    labeling_strategy: Literal["uncertain", "typical"] = Field(
        "typical",
        validation_alias=_env("MLOPS_LABELING_STRATEGY"),
        description="How an episode picks what to label: 'uncertain' = the served version's smallest margins, "
        "spread by k-center on the base encoder; 'typical' = TypiClust, the most typical tweet of each of "
        "`budget` k-means clusters of a uniform sample of the window (no margins). An episode is traffic the "
        "serving version does not know, where its margins say little: measured on the NFL shift "
        "(bench/labeling.py, 3 seeds), typical was ahead of uncertain at every budget and of random at 100.",
    )

    # Orchestration (the local stack)
    prefect_port: int = Field(
        4200,
        ge=1,
        le=65535,
        validation_alias=_env("MLOPS_PREFECT_PORT"),
        description="Port of the local Prefect server (`up`, `demo`; another free one when taken).",
    )
    prefect_database_url: SecretStr | None = Field(
        None,
        validation_alias=_env("MLOPS_PREFECT_DATABASE_URL"),
        description="PostgreSQL URL for the Prefect server that `up` starts (its own database, created when "
        "missing; postgresql:// or postgresql+asyncpg://); default Prefect's SQLite file under MLOPS_HOME. "
        "A secret, like the DB URL.",
    )

    @field_validator("artifact_uri", mode="before")
    @classmethod
    def _artifact_uri(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().rstrip("/") or None
        ok = isinstance(value, str) and (
            (value.startswith("s3://") and len(value) > len("s3://"))
            or (value.startswith("hf://") and len([p for p in value[5:].split("/") if p]) == 2)
        )
        if value is not None and not ok:
            raise ValueError(
                f"MLOPS_ARTIFACT_URI must be s3://bucket[/prefix] or hf://org/repo, not {value!r}"
            )
        return value

    @field_validator("open_endpoints", mode="before")
    @classmethod
    def _groups(cls, value: Any) -> Any:
        if isinstance(value, str):
            return frozenset(p.strip().lower() for p in value.split(",") if p.strip())
        return value

    @field_validator("import_roots", mode="before")
    @classmethod
    def _roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(Path(p.strip()) for p in value.split(",") if p.strip())
        return value

    @property
    def import_root_paths(self) -> tuple[Path, ...]:
        """Where `POST /models/register` may read model folders."""
        return self.import_roots or (self.mlops_home,)

    @property
    def redis_dsn(self) -> str | None:
        """The Redis URL itself (for the client only; show `security.mask_url` of it)."""
        return _plain(self.redis_url)

    def backends(self) -> dict[str, Any]:
        """Which backend each concern uses with these settings (for status answers; no secret in it)."""
        return {
            "database": self.db_url.split("://", 1)[0],
            "tracking": "wandb-online" if self.wandb_api_key else "wandb-offline",
            "hub_mirror": bool(self.huggingface_token),
            "feature_store": "hopsworks" if self.hopsworks_api_key else "local",
            "cache": "redis" if self.redis_url else "in-process",
            "artifacts": self.artifact_uri.split("://", 1)[0] if self.artifact_uri else "local",
        }

    @property
    def models_path(self) -> Path:
        return self.models_dir or self.mlops_home / "models"

    @property
    def artifact_cache_path(self) -> Path:
        """Versions resolved from MLOPS_ARTIFACT_URI, one folder per manifest hash (`registry.artifacts`)."""
        return self.mlops_home / "cache" / "artifacts"

    @property
    def deployments_path(self) -> Path:
        return self.deployments_dir or self.mlops_home / "deployments"

    @property
    def datasets_path(self) -> Path:
        """The dataset store: immutable training datasets, one folder per content-hash version."""
        return self.mlops_home / "datasets"

    @property
    def reports_path(self) -> Path:
        return self.mlops_home / "reports"

    @property
    def spool_path(self) -> Path:
        """The prediction log's write-ahead segments (per model; shared by the replicas of one host)."""
        return self.mlops_home / "spool" / self.model_name

    @property
    def wandb_dir(self) -> Path:
        return self.mlops_home / "wandb"

    @property
    def feature_store_path(self) -> Path:
        return self.mlops_home / "feature_store"

    @property
    def optuna_url(self) -> str:
        if self.optuna_storage:
            return str(_plain(self.optuna_storage))
        return f"sqlite:///{(self.mlops_home / 'optuna.db').resolve()}"

    @property
    def db_url(self) -> str:
        if self.database_url:
            return str(_plain(self.database_url))
        return f"sqlite:///{(self.mlops_home / 'mlops.db').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call `get_settings.cache_clear()` after changing env.

    Reading them also teaches the process their secrets' values, which its logs then never show
    (`security.protect`)."""
    from nfl_mlops.security import protect

    settings = Settings()
    protect(settings)
    return settings
