"""Typed settings for each service, read from GEOMESH_* environment variables when a service starts.

Nothing is read at import time: `geomesh serve` builds them in main() and tests build them directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from geomesh.identity import MeshSettings
from geomesh.logs import LogFormat
from geomesh.s3 import S3Settings

DEFAULT_DATA_DIR = Path(".data")


class _Service(BaseSettings):
    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)
    # Port for Prometheus' /metrics (None turns it off), on its own address: loopback unless opened.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    # GEOMESH_<SERVICE>_LOG_LEVEL; GEOMESH_LOG_FORMAT (json, or text for a terminal) for every service.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: LogFormat = Field(default="json", validation_alias=AliasChoices("GEOMESH_LOG_FORMAT", "log_format"))
    # Every call this service makes to another gives up after this long (streams: see each service).
    rpc_timeout_seconds: float = Field(default=30.0, gt=0)
    # How this service proves who it is to the others, and checks who calls it (GEOMESH_MESH_*).
    mesh: MeshSettings = Field(default_factory=MeshSettings)


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
    # Raster work runs in worker processes: `workers` for any item, `light_workers` for items whose
    # output has at most `light_pixels` pixels (crops, small maps), so they never wait behind big ones.
    workers: int = Field(default=2, ge=1)
    light_workers: int = Field(default=2, ge=1)
    light_pixels: int = Field(default=4 * 1024 * 1024, ge=1)
    # Items waiting for a worker, per pool; more are refused with a 429 and Retry-After.
    max_queued: int = Field(default=32, ge=0)
    # The most one item's output may take in memory (pixels x bands x bytes); larger: a 413.
    max_output_bytes: int = Field(default=512 * 1024**2, ge=1)
    # A worker above this resident size is killed and its item fails with a 413.
    worker_memory_bytes: int = Field(default=3 * 1024**3, ge=64 * 1024**2)
    # Outputs being made or streamed may take this much scratch space; beyond, new items get a 503.
    max_scratch_bytes: int = Field(default=16 * 1024**3, ge=1)
    # GDAL's block cache, per worker process.
    gdal_cache_bytes: int = Field(default=256 * 1024**2, ge=1024**2)
    # Open datasets kept between requests (GDAL's block cache makes repeated crops cheap).
    open_datasets: int = Field(default=64, ge=0)
    chunk_bytes: int = Field(default=256 * 1024, ge=4096)
    # Each process works in a folder of its own below this one, swept when it stops or is found
    # left behind by a killed process. None: <system temp>/geomesh-scratch.
    scratch_dir: Path | None = None
    # The only granule links this transformer reads: URL prefixes, comma-separated, e.g.
    # file:///srv/geomesh/granules/,s3://demo-data/,https://data.example.org/protected/ (a file
    # prefix is compared with the link's real path, symbolic links followed). Unset: none at all.
    allowed_urls: Annotated[list[str], NoDecode] = []
    # Data hosts that receive the caller's bearer token with each read (names or patterns such as
    # *.earthdata.nasa.gov; comma-separated); every other host gets none.
    token_hosts: Annotated[list[str], NoDecode] = []
    # Every read of a remote granule (https, s3) gives up after this long without an answer.
    http_timeout_seconds: float = Field(default=60.0, gt=0)
    # Families that read local files (netcdf, swath) copy a remote granule first, up to this size.
    max_download_bytes: int = Field(default=2 * 1024**3, ge=1)
    s3: S3Settings = Field(default_factory=S3Settings)

    @field_validator("token_hosts", "allowed_urls", mode="before")
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
    # Calls in flight to one transformer address; more would queue here (thousands on one channel
    # fail). Above what its workers and queues take, the transformer answers 429 at once instead.
    transformer_concurrency: int = Field(default=128, ge=1)
    data_dir: Path = DEFAULT_DATA_DIR
    # None: SQLite in the data folder. PostgreSQL: postgresql+asyncpg://user@host/db
    database_url: str | None = None
    # Bring the job store's schema up to date at start (False when `geomesh migrate` does it first).
    migrate: bool = True
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
    # A work item (one granule's transformation and staging) that takes longer fails, counted as an
    # attempt: its lease is no longer renewed.
    work_item_timeout_seconds: float = Field(default=900.0, gt=0)
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


# Algorithms of public keys: an HS* token could be "verified" with a published key by anyone.
JWT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


def secure_url(url: str) -> str:
    """An https URL, or http on this machine only: keys fetched over plain http could be anyone's."""
    parts = urlsplit(url)
    local = parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")
    if not parts.hostname or not (parts.scheme == "https" or local):
        raise ValueError(f"{url!r} must be an https:// URL (http:// only on 127.0.0.1 or localhost)")
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
    # OpenID Connect (see edge/oidc.py): bearer tokens that are JWTs are verified against the keys of
    # this issuer (the `iss` of its tokens), found through <issuer>/.well-known/openid-configuration
    # unless oidc_jwks_url names them (Earthdata Login publishes no discovery document). Works
    # alongside users_file. None: no JWT is accepted.
    oidc_issuer: str | None = Field(default=None, min_length=1)
    oidc_jwks_url: str | None = None
    # The audiences (comma-separated) one of which a token's `aud` must name; empty: not checked.
    oidc_audience: Annotated[list[str], NoDecode] = []
    # The claim naming the user: "sub" in OpenID Connect, "uid" in Earthdata Login tokens.
    oidc_user_claim: str = "sub"
    # A claim (e.g. "groups") any of whose values in oidc_admin_values (comma-separated) makes an admin.
    oidc_admin_claim: str | None = None
    oidc_admin_values: Annotated[list[str], NoDecode] = []
    oidc_algorithms: Annotated[list[str], NoDecode] = ["RS256", "ES256"]
    # Keys are kept this long; a token naming an unknown key fetches them again, at most this often.
    oidc_jwks_cache_seconds: float = Field(default=300.0, gt=0)
    oidc_jwks_refetch_seconds: float = Field(default=10.0, ge=0)
    # Clock skew allowed when checking exp, nbf and iat.
    oidc_leeway_seconds: float = Field(default=60.0, ge=0)

    @field_validator("oidc_audience", "oidc_admin_values", "oidc_algorithms", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    @field_validator("oidc_jwks_url")
    @classmethod
    def _secure(cls, url: str | None) -> str | None:
        return secure_url(url) if url is not None else None

    @field_validator("oidc_algorithms")
    @classmethod
    def _asymmetric(cls, algorithms: list[str]) -> list[str]:
        if not algorithms or any(alg not in JWT_ALGORITHMS for alg in algorithms):
            raise ValueError(f"oidc_algorithms {algorithms} must be some of {', '.join(JWT_ALGORITHMS)}")
        return algorithms

    @model_validator(mode="after")
    def _oidc_complete(self) -> EdgeSettings:
        if self.oidc_issuer is None and (self.oidc_jwks_url or self.oidc_audience or self.oidc_admin_claim):
            raise ValueError("the oidc_* settings need oidc_issuer, the `iss` of the tokens to accept")
        if self.oidc_issuer is not None and self.oidc_jwks_url is None:
            secure_url(self.oidc_issuer)  # its discovery document names the keys
        if bool(self.oidc_admin_claim) != bool(self.oidc_admin_values):
            raise ValueError("oidc_admin_claim and oidc_admin_values go together: the claim, and its values that make an admin")
        return self

    # The longest a streamed answer may take: a synchronous result, a download relayed from staging.
    stream_timeout_seconds: float = Field(default=3600.0, gt=0)
    # Links (jobs, STAC, redirects) start with this, e.g. https://geomesh.example.org behind a proxy.
    # None: the address the client reached the edge at (never the Host header, which a client sets).
    public_url: str | None = None
    # Proxies (their addresses) whose X-Forwarded-Proto and X-Forwarded-Host say what the client asked for.
    trusted_proxies: Annotated[list[str], NoDecode] = []
    # Host names (besides localhost) that, named by a client's Host header, are used in its links;
    # any other Host gets links to the address the client reached.
    allowed_hosts: Annotated[list[str], NoDecode] = []
    # Requests answered at once, in all and per user (per client address without users); beyond:
    # 503 and 429, with Retry-After.
    max_requests: int = Field(default=256, ge=1)
    max_requests_per_user: int = Field(default=32, ge=1)
    # Connections open at once (beyond: a 503 and closed); a connection's first request headers
    # must arrive within header_timeout_seconds, a body within body_timeout_seconds; an idle kept-alive
    # connection is closed after keepalive_timeout_seconds.
    max_connections: int = Field(default=4096, ge=1)
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=60.0, gt=0)
    keepalive_timeout_seconds: float = Field(default=30.0, gt=0)

    @field_validator("trusted_proxies", "allowed_hosts", mode="before")
    @classmethod
    def _proxies(cls, value: object) -> object:
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value
