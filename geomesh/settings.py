"""Typed settings for each service, read from GEOMESH_* environment variables when a service starts.

Nothing is read at import time: `geomesh serve` builds them in main() and tests build them directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
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


class TransformerSettings(_Service):
    model_config = SettingsConfigDict(env_prefix="GEOMESH_TRANSFORMER_")

    port: int = 50061
    family: Literal["gdal"] = "gdal"
    # Raster work runs on this many threads, off the event loop.
    workers: int = Field(default=4, ge=1)
    # Open datasets kept between requests (GDAL's block cache makes repeated crops cheap).
    open_datasets: int = Field(default=64, ge=0)
    chunk_bytes: int = Field(default=256 * 1024, ge=4096)
    scratch_dir: Path | None = None


class SchedulerSettings(_Service):
    model_config = SettingsConfigDict(env_prefix="GEOMESH_SCHEDULER_")

    port: int = 50051
    catalog_address: str = "127.0.0.1:50052"
    # Calls in flight to one transformer address; more would queue on the channel.
    transformer_concurrency: int = Field(default=16, ge=1)


class EdgeSettings(_Service):
    model_config = SettingsConfigDict(env_prefix="GEOMESH_EDGE_")

    port: int = 3000
    scheduler_address: str = "127.0.0.1:50051"
    catalog_address: str = "127.0.0.1:50052"
    # Shown as the user of every request until users and tokens are configured.
    default_user: str = "anonymous"
