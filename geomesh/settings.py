"""Typed settings for each service, read from GEOMESH_* environment variables when a service starts.

Nothing is read at import time: `geomesh serve` builds them in main() and tests build them directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    scratch_dir: Path | None = None

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
    # None: <data_dir>/staging. Job outputs are written here and served by /service-results.
    staging_dir: Path | None = None
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
    def resolved_staging_dir(self) -> Path:
        return (self.staging_dir or self.data_dir / "staging").resolve()


class EdgeSettings(_Service):
    model_config = SettingsConfigDict(env_prefix="GEOMESH_EDGE_")

    port: int = 3000
    scheduler_address: str = "127.0.0.1:50051"
    catalog_address: str = "127.0.0.1:50052"
    # Users, their tokens/passwords and roles (YAML, see edge/auth.py). None: one local user,
    # default_user, owns every request: the embedded single-user default.
    users_file: Path | None = None
    default_user: str = "anonymous"
