"""Typed settings for each service, read from GEOMESH_* environment variables when a service starts.

Nothing is read at import time: `geomesh serve` builds them in main() and tests build them directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from geomesh.s3 import S3Settings

DEFAULT_DATA_DIR = Path(".data")


class _Service(BaseSettings):
    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)
    # Port for Prometheus' /metrics; None turns it off.
    metrics_port: int | None = None
    log_level: str = "INFO"


class CatalogSettings(_Service):
    model_config = SettingsConfigDict(env_prefix="GEOMESH_CATALOG_")

    port: int = 50052
    backend: Literal["local", "cmr"] = "local"
    data_dir: Path = DEFAULT_DATA_DIR
    # Where the embedded catalog's granule files are read from: its relative links resolve against
    # this URL, e.g. s3://demo-data/ once the data folder's granules/ is copied there, so that
    # transformers on other hosts need no shared folder. None: the data folder itself (file://).
    data_url: str | None = None
    cmr_url: str = "https://cmr.uat.earthdata.nasa.gov"
    cmr_token: str | None = None
    # None: the registry shipped with geomesh (catalog/services.yml).
    services_file: Path | None = None


# Transformer families: transformers/<family>/service.py serve(). `geomesh up` starts one of each.
TRANSFORMER_FAMILIES = ("gdal", "netcdf", "swath")


class TransformerSettings(_Service):
    model_config = SettingsConfigDict(env_prefix="GEOMESH_TRANSFORMER_")

    port: int = 50061
    family: str = "gdal"
    # Raster work runs on this many threads, off the event loop.
    workers: int = Field(default=4, ge=1)
    # Open datasets kept between requests (GDAL's block cache makes repeated crops cheap).
    open_datasets: int = Field(default=64, ge=0)
    chunk_bytes: int = Field(default=256 * 1024, ge=4096)
    # Each process works in a folder of its own below this one, swept when it stops or is found
    # left behind by a killed process. None: <system temp>/geomesh-scratch.
    scratch_dir: Path | None = None
    # Data hosts that receive the caller's bearer token with each read (names or patterns such as
    # *.earthdata.nasa.gov; comma-separated); every other host gets none.
    token_hosts: Annotated[list[str], NoDecode] = []
    # Every read of a remote granule (https, s3) gives up after this long without an answer.
    http_timeout_seconds: float = Field(default=60.0, gt=0)
    # Families that read local files (netcdf, swath) copy a remote granule first, up to this size.
    max_download_bytes: int = Field(default=2 * 1024**3, ge=1)
    s3: S3Settings = Field(default_factory=S3Settings)

    @field_validator("token_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    @field_validator("family")
    @classmethod
    def _known_family(cls, family: str) -> str:
        if family not in TRANSFORMER_FAMILIES:
            raise ValueError(f"unknown transformer family {family!r}; families: {', '.join(TRANSFORMER_FAMILIES)}")
        return family


class SchedulerSettings(_Service):
    model_config = SettingsConfigDict(env_prefix="GEOMESH_SCHEDULER_")

    port: int = 50051
    catalog_address: str = "127.0.0.1:50052"
    # Calls in flight to one transformer address; more would queue on the channel.
    transformer_concurrency: int = Field(default=16, ge=1)
    data_dir: Path = DEFAULT_DATA_DIR
    # None: SQLite in the data folder. PostgreSQL: postgresql+asyncpg://user@host/db
    database_url: str | None = None
    # Where job outputs are written and served from (/service-results): file:///<folder> or
    # s3://<bucket>/<prefix> (every scheduler and edge on any host then serves every output).
    # None: the folder <data_dir>/staging.
    staging_url: str | None = None
    # Object storage clients can reach: /service-results redirects (307) to a presigned URL valid
    # this long. False streams outputs through the scheduler and edge instead.
    staging_redirect: bool = True
    presign_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    # How often each scheduler looks for expired outputs to delete (one of them acts at a time).
    reaper_interval_seconds: float = Field(default=3600.0, gt=0)
    s3: S3Settings = Field(default_factory=S3Settings)
    # Work items this scheduler runs at once (the transformer pool also caps calls per replica).
    dispatch_slots: int = Field(default=8, ge=1)
    # A leased item whose scheduler stops renewing it is run again by another after this long.
    lease_seconds: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    # Retries wait retry_delay_seconds * 2^(attempt-1).
    retry_delay_seconds: float = Field(default=1.0, ge=0)
    # The most granules one job processes ("system constraints" in the job message).
    max_granules: int = Field(default=10000, ge=1)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{(self.data_dir / 'jobs.db').resolve()}"

    @property
    def resolved_staging_url(self) -> str:
        return self.staging_url or (self.data_dir / "staging").resolve().as_uri()

    @field_validator("staging_url")
    @classmethod
    def _staging_scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("file:///", "s3://")):
            raise ValueError(f"staging_url {url!r} must be file:///<folder> or s3://<bucket>/<prefix>")
        return url


class EdgeSettings(_Service):
    model_config = SettingsConfigDict(env_prefix="GEOMESH_EDGE_")

    port: int = 3000
    scheduler_address: str = "127.0.0.1:50051"
    catalog_address: str = "127.0.0.1:50052"
    # Users, their tokens/passwords and roles (YAML, see edge/auth.py). None: one local user,
    # default_user, owns every request: the embedded single-user default.
    users_file: Path | None = None
    default_user: str = "anonymous"
