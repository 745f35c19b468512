"""The service's configuration: one pydantic-settings class, read once at startup and passed in.

Nothing in ``app/`` reads the environment or builds an engine at import time: the CLI (or a test)
builds a :class:`Settings` and hands it to :func:`app.main.create_app`, :func:`app.db.make_engine`
and :func:`app.migrate.upgrade`. Every field can be set from ``SURGICAL_<FIELD>``.

Derived defaults (``database_url``, ``optuna_storage_url``, ``artifact_dir``, ``data_roots``) are
filled in from ``data_dir`` after validation, so after construction they are always set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_list(value: Any, sep: str) -> Any:
    """Accept a JSON list or a ``sep``-separated string for list-valued environment variables."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return json.loads(text)
    return [part.strip() for part in text.split(sep) if part.strip()]


def normalize_db_url(url: str) -> str:
    """Route plain ``postgresql://`` URLs to psycopg 3, the only PostgreSQL driver installed."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class Settings(BaseSettings):
    """Everything the service, the migrations and the workers need to agree on."""

    model_config = SettingsConfigDict(env_prefix="SURGICAL_", extra="ignore")

    data_dir: Path = Field(
        default=Path("~/.cache/surgical"),
        description="Root of everything local: the SQLite database, artifacts, datasets, caches.",
    )
    database_url: str = Field(
        default="", description="SQLAlchemy URL of the jobs database (default: SQLite in data_dir)."
    )
    optuna_storage_url: str | None = Field(
        default=None, description="Optuna RDB storage URL (default: the jobs database)."
    )
    artifact_dir: Path | None = Field(
        default=None, description="FileSystemArtifactStore root (default: <data_dir>/artifacts)."
    )
    artifact_s3_bucket: str | None = Field(
        default=None, description="Use Optuna's Boto3ArtifactStore on this bucket (needs boto3)."
    )
    data_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Directories that job file references must resolve into "
        "(default: [<data_dir>/datasets]); JSON list or os.pathsep-separated.",
    )
    factory_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Module prefixes whose 'pkg.mod:fn' model factories jobs may call "
        "(empty: none); JSON list or comma-separated.",
    )
    remote_uri_schemes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Remote fsspec schemes (e.g. 'gcs,https') that job file references may use "
        "(empty: only local files inside the data roots; 's3' is enabled with "
        "artifact_s3_bucket). JSON list or comma-separated.",
    )
    auth: bool = Field(
        default=True, description="Require API keys. False = local embedded mode, owner 'local'."
    )

    # Hard limits: requests above them are rejected with 422 naming the field.
    max_trials: int = Field(default=200, ge=1)
    max_epochs: int = Field(default=50, ge=1)
    max_n_per_class: int = Field(default=2000, ge=1)
    max_batch_size: int = Field(default=1024, ge=1)

    # Worker coordination (seconds).
    heartbeat_seconds: float = Field(default=10, gt=0)
    stale_after_seconds: float = Field(default=120, gt=0)
    retry_after_seconds: int = Field(default=2, ge=0)
    # Optuna trial heartbeats (RDBStorage heartbeat_interval / grace_period): a trial whose
    # worker stops beating for trial_grace_seconds is failed and retried by another worker.
    trial_heartbeat_seconds: int = Field(default=30, ge=1)
    trial_grace_seconds: int = Field(default=120, ge=2)

    # CPU workers: torch threads per worker process (None: torch's default, all cores). Several
    # workers on one machine should split the cores; oversubscribed threads slow small models
    # down by orders of magnitude.
    torch_threads: int | None = Field(default=None, ge=1)
    #: Per worker, per job: the frozen prefix's activations kept across trials (MiB, LRU;
    #: ``SURGICAL_ACTIVATION_CACHE_MB``; 0 turns the cross-trial cache off).
    activation_cache_mb: int = Field(default=512, ge=0)
    #: Decoded image folders kept memory-mapped under $DATA_DIR/decoded (MiB, least recently
    #: used evicted first; ``SURGICAL_DECODE_CACHE_MB``; 0: no bound).
    decode_cache_mb: int = Field(default=20_480, ge=0)
    # DataLoader worker processes that decode an image folder the first time and stream a
    # split too large to hold in memory (decoded images are memory-mapped from
    # $DATA_DIR/decoded); 0: the worker process does both itself.
    loader_workers: int = Field(default=0, ge=0, le=64)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)

    @field_validator("data_roots", mode="before")
    @classmethod
    def _parse_roots(cls, value: Any) -> Any:
        return _split_list(value, os.pathsep)

    @field_validator("remote_uri_schemes", mode="before")
    @classmethod
    def _parse_schemes(cls, value: Any) -> Any:
        return _split_list(value, ",")

    @field_validator("factory_allowlist", mode="before")
    @classmethod
    def _parse_allowlist(cls, value: Any) -> Any:
        return _split_list(value, ",")

    @model_validator(mode="after")
    def _derive_defaults(self) -> Settings:
        self.data_dir = self.data_dir.expanduser()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'surgical.db'}"
        self.database_url = normalize_db_url(self.database_url)
        self.optuna_storage_url = normalize_db_url(self.optuna_storage_url or self.database_url)
        self.artifact_dir = (self.artifact_dir or self.data_dir / "artifacts").expanduser()
        if not self.data_roots:
            self.data_roots = [self.data_dir / "datasets"]
        self.data_roots = [root.expanduser() for root in self.data_roots]
        return self

    @property
    def enabled_uri_schemes(self) -> frozenset[str]:
        """Remote schemes job file references may use (``s3`` goes with the S3 artifacts)."""
        schemes = {scheme.lower() for scheme in self.remote_uri_schemes}
        if self.artifact_s3_bucket:
            schemes.add("s3")
        return frozenset(schemes)

    @property
    def storage_url(self) -> str:
        """The Optuna storage URL, never None (``optuna_storage_url`` after defaults)."""
        return self.optuna_storage_url or self.database_url
