"""S3 access for every service that needs it: per-bucket endpoints and credentials, one client per bucket.

Settings (`GEOMESH_S3_*`) give defaults for every bucket and, in `GEOMESH_S3_BUCKETS` (JSON), the
buckets that differ (another endpoint, other keys). Whatever is left unset comes from the standard
AWS chain, as boto3 reads it: `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_REGION`, `~/.aws/credentials` and `~/.aws/config`. The same resolved settings drive boto3
(staging, destinationUrl, granule downloads) and GDAL's /vsis3/ (granule reads), so both agree.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    ReadTimeoutError,
)
from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict

from geomesh.errors import (
    BadGatewayError,
    ForbiddenError,
    GatewayTimeoutError,
    NotFoundError,
    RequestValidationError,
)

# Connection and read timeouts of every S3 call; botocore retries transient failures itself.
_CLIENT_CONFIG = dict(connect_timeout=10, read_timeout=60, retries={"max_attempts": 4, "mode": "standard"})


class BucketSettings(BaseModel):
    """How to reach one bucket; None: the default (GEOMESH_S3_*), then the standard AWS chain."""

    endpoint_url: str | None = None
    # The endpoint in presigned URLs handed to clients, when they reach the store by another name.
    public_endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None


class S3Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GEOMESH_S3_")

    endpoint_url: str | None = None
    public_endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    # Buckets that differ from the defaults, e.g. {"user-outputs": {"endpoint_url": "http://..."}}.
    buckets: dict[str, BucketSettings] = {}

    def for_bucket(self, bucket: str) -> BucketSettings:
        own = self.buckets.get(bucket, BucketSettings())
        defaults = BucketSettings(
            endpoint_url=self.endpoint_url,
            public_endpoint_url=self.public_endpoint_url,
            region=self.region,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
        )
        return BucketSettings(**{**defaults.model_dump(), **own.model_dump(exclude_none=True)})


def split_s3_url(url: str) -> tuple[str, str]:
    """s3://bucket/some/prefix -> ("bucket", "some/prefix"); ValueError naming what is wrong."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"{url!r} is not an S3 URL: write s3://<bucket>/<prefix>")
    return parsed.netloc, parsed.path.strip("/")


@dataclass(frozen=True)
class BucketAccess:
    """A bucket's client and what GDAL needs to read it the same way."""

    bucket: str
    client: Any  # botocore's S3 client: thread-safe, shared
    public_client: Any  # signs URLs for clients (the public endpoint), else the same client
    credentials: Any  # botocore Credentials (refreshed when temporary), or None for anonymous access

    def gdal_options(self) -> dict[str, str]:
        """GDAL's /vsis3/ configuration for this bucket, set per thread inside rasterio.Env."""
        endpoint = urlparse(self.client.meta.endpoint_url)
        options = {"AWS_REGION": self.client.meta.region_name or "us-east-1"}
        if not _on_aws(self.client.meta.endpoint_url):
            options |= {
                "AWS_S3_ENDPOINT": endpoint.netloc,
                "AWS_HTTPS": "YES" if endpoint.scheme == "https" else "NO",
                "AWS_VIRTUAL_HOSTING": "FALSE",
            }
        if self.credentials is None:
            return options | {"AWS_NO_SIGN_REQUEST": "YES"}
        frozen = self.credentials.get_frozen_credentials()
        options |= {"AWS_ACCESS_KEY_ID": frozen.access_key, "AWS_SECRET_ACCESS_KEY": frozen.secret_key}
        if frozen.token:
            options["AWS_SESSION_TOKEN"] = frozen.token
        return options


class S3Clients:
    """One client per bucket, made on first use (boto3 sessions are not thread-safe; clients are)."""

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self._access: dict[str, BucketAccess] = {}
        self._lock = threading.Lock()

    def bucket(self, bucket: str) -> BucketAccess:
        with self._lock:
            if bucket not in self._access:
                self._access[bucket] = self._make(bucket)
            return self._access[bucket]

    def _make(self, bucket: str) -> BucketAccess:
        wanted = self.settings.for_bucket(bucket)
        session = boto3.session.Session(
            aws_access_key_id=wanted.access_key_id,
            aws_secret_access_key=wanted.secret_access_key,
            region_name=wanted.region,
        )
        credentials = session.get_credentials()
        # No credentials anywhere: public buckets can still be read, unsigned.
        config = Config(**_CLIENT_CONFIG, signature_version="s3v4" if credentials else UNSIGNED)
        client = _client(session, wanted.endpoint_url, config)
        public = _client(session, wanted.public_endpoint_url, config) if wanted.public_endpoint_url else client
        return BucketAccess(bucket, client, public, credentials)


def _client(session: boto3.session.Session, endpoint_url: str | None, config: Config) -> Any:
    client = session.client("s3", endpoint_url=endpoint_url, config=config)
    if _on_aws(client.meta.endpoint_url):
        return client
    # S3-compatible stores (SeaweedFS, MinIO, ...) want path-style addressing; the endpoint may
    # come from AWS_ENDPOINT_URL or ~/.aws/config, so it is known only once a client exists.
    return session.client("s3", endpoint_url=endpoint_url, config=config.merge(Config(s3={"addressing_style": "path"})))


def _on_aws(endpoint_url: str) -> bool:
    host = urlparse(endpoint_url).hostname or ""
    return host == "amazonaws.com" or host.endswith(".amazonaws.com")


@contextmanager
def s3_errors(url: str) -> Iterator[None]:
    """botocore's failures as geomesh errors naming the object: missing, refused, or worth a retry."""
    try:
        yield
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in ("NoSuchKey", "NoSuchBucket", "404", "NotFound") or status == 404:
            raise NotFoundError(f"{url} does not exist ({code or status})") from None
        if status in (401, 403) or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise ForbiddenError(f"The S3 store refused access to {url} ({code or status})") from None
        if status >= 500 or status == 0:
            raise BadGatewayError(f"The S3 store failed on {url} ({code or status}); try again later") from None
        raise RequestValidationError(f"The S3 store refused the request for {url} ({code}: {error})") from None
    except (ConnectTimeoutError, ReadTimeoutError) as error:
        raise GatewayTimeoutError(f"The S3 store did not answer in time for {url}: {error}") from None
    except BotoCoreError as error:  # connection refused, DNS, no credentials, ...
        raise BadGatewayError(f"The S3 store could not be reached for {url}: {error}") from None
