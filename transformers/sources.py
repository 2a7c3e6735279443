"""Granules read by URL, in every transformer family: file://, https:// and s3://, each with its own credentials.

Credentials are scoped per host, never process-wide: the caller's bearer token goes only to the
data hosts configured to receive it (`GEOMESH_TRANSFORMER_TOKEN_HOSTS`, as Harmony forwards
Earthdata Login tokens), and S3 keys and endpoints come per bucket from geomesh.s3. GDAL reads
public links and S3 in place, with thread-local options inside rasterio.Env (only the bytes it
needs). A link read with a caller's token, and every link of the NetCDF families (whose libraries
read local files), is copied to scratch first, bounded in size and deleted after use: GDAL caches
what /vsicurl/ reads process-wide by URL, while a handle is open, so bytes one caller's token
fetched could otherwise be served to a caller without it; GDAL never sees a token.

A data host's refusal (401/403) is the caller's 403 naming the host; a timeout or a 5xx is a
502/504 naming the granule and host, which the dispatcher retries as a transient failure.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from urllib.parse import unquote, urlparse

import rasterio
import rasterio.session
import requests

from geomesh.errors import (
    BadGatewayError,
    ForbiddenError,
    GatewayTimeoutError,
    GeomeshError,
    NotFoundError,
    TransformError,
    UnsupportedOperationError,
)
from geomesh.s3 import S3Clients, S3Settings, s3_errors
from transformers.failures import unprocessable

log = logging.getLogger(__name__)

DOWNLOAD_CHUNK = 1024 * 1024
REMOTE_SCHEMES = ("http", "https", "s3")


_AWS_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


class _AwsKeys(rasterio.session.Session):
    """A bucket's keys, handed to rasterio.Env the one way it takes them."""

    def __init__(self, keys: dict[str, str]) -> None:
        self._keys = keys

    def get_credential_options(self) -> dict[str, str]:
        return self._keys


@dataclass(frozen=True, slots=True)
class Source:
    """One granule's data link and the token of the caller it is read for."""

    granule_id: str
    href: str
    token: str = ""

    @property
    def scheme(self) -> str:
        return urlparse(self.href).scheme.lower()

    @property
    def host(self) -> str:
        return urlparse(self.href).hostname or ""

    @property
    def local_path(self) -> Path | None:
        """The file a file:// link or plain path names; None for remote links."""
        url = urlparse(self.href)
        if url.scheme == "file":
            return Path(unquote(url.path))
        if url.scheme == "":
            return Path(self.href)
        return None


class DataAccess:
    """How this transformer reaches data links: which hosts get the caller's token, S3 per bucket."""

    def __init__(
        self,
        *,
        allowed_urls: tuple[str, ...] = ("file:///",),
        token_hosts: tuple[str, ...] = (),
        s3: S3Clients | None = None,
        timeout_seconds: float = 60.0,
        max_download_bytes: int = 2 * 1024**3,
    ) -> None:
        self.allowed_urls = tuple(allowed_urls)
        self.token_hosts = tuple(host.lower() for host in token_hosts)
        self.s3 = s3 or S3Clients(S3Settings())
        self.timeout_seconds = timeout_seconds
        self.max_download_bytes = max_download_bytes

    def check(self, source: Source) -> None:
        """Refuse, on the event loop, a link no family can read or that this transformer may not:
        links come from the catalog, and a transformer reads only where its settings allow."""
        if source.local_path is None and source.scheme not in REMOTE_SCHEMES:
            raise TransformError(
                f"Granule {source.granule_id}'s data link is neither a local file nor an http(s) or s3 URL."
            )
        if not self._allowed(source):
            log.warning("granule %s: refused to read %s (not in GEOMESH_TRANSFORMER_ALLOWED_URLS)", source.granule_id, source.href)
            raise ForbiddenError(
                f"Granule {source.granule_id}'s data link is outside the locations this transformer may read "
                "(GEOMESH_TRANSFORMER_ALLOWED_URLS)."
            )

    def _allowed(self, source: Source) -> bool:
        local = source.local_path
        if local is None:
            return any(source.href.startswith(prefix) for prefix in self.allowed_urls if not prefix.startswith("file:"))
        if str(local).startswith("/vsi"):  # GDAL's virtual file systems reach anything
            return False
        real = os.path.realpath(local)
        for prefix in self.allowed_urls:
            if prefix.startswith("file:"):
                folder = os.path.realpath(unquote(urlparse(prefix).path))
                if real == folder or real.startswith(folder.rstrip("/") + "/"):
                    return True
        return False

    def gets_token(self, source: Source) -> bool:
        """Whether the caller's token may go to this link's host (a name or pattern such as *.example.org)."""
        return bool(source.token) and source.scheme in ("http", "https") and any(
            fnmatchcase(source.host.lower(), pattern) for pattern in self.token_hosts
        )

    # -- GDAL: read in place -------------------------------------------------------------------

    def gdal_path(self, source: Source) -> str:
        url = urlparse(source.href)
        if source.local_path is not None:
            return str(source.local_path)
        if url.scheme in ("http", "https"):
            return f"/vsicurl/{source.href}"
        return f"/vsis3/{url.netloc}{url.path}"

    def gdal_env(self, source: Source) -> rasterio.Env:
        """The GDAL configuration for reading this link, for the calling thread only (rasterio sets
        options thread-locally off the main thread); blocking: an S3 client may be made."""
        options = self.gdal_options(source)
        keys = {name: options.pop(name) for name in _AWS_KEYS if name in options}
        # rasterio accepts AWS keys only from a session object, not as plain options.
        return rasterio.Env(session=_AwsKeys(keys), **options) if keys else rasterio.Env(**options)

    def gdal_options(self, source: Source) -> dict[str, str]:
        """GDAL's configuration options for reading this link, credentials included."""
        if source.local_path is not None:
            return {}
        options = {
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
            "GDAL_HTTP_TIMEOUT": str(int(self.timeout_seconds)),
            "GDAL_HTTP_CONNECTTIMEOUT": str(int(min(self.timeout_seconds, 10))),
            "GDAL_HTTP_MAX_RETRY": "2",
            "GDAL_HTTP_RETRY_DELAY": "0.5",
        }
        if source.scheme == "s3":
            return options | self.s3.bucket(urlparse(source.href).netloc).gdal_options()
        return options

    # -- local copies for libraries that read files ----------------------------------------------

    @contextmanager
    def local_file(self, source: Source, scratch_dir: Path | None) -> Iterator[Path]:
        """The link as a local file: itself when local, else a scratch copy deleted afterwards."""
        if source.local_path is not None:
            yield source.local_path
            return
        suffix = Path(urlparse(source.href).path).suffix
        descriptor, name = tempfile.mkstemp(prefix="granule-", suffix=suffix, dir=scratch_dir)
        path = Path(name)
        try:
            with os.fdopen(descriptor, "wb") as out:
                if source.scheme == "s3":
                    self._download_s3(source, out)
                else:
                    self._download_http(source, out)
            yield path
        finally:
            path.unlink(missing_ok=True)

    def _too_large(self, source: Source, size: int) -> UnsupportedOperationError:
        return UnsupportedOperationError(
            f"Granule {source.granule_id} ({source.href}) is {size} bytes, more than this transformer copies "
            f"({self.max_download_bytes} bytes)."
        )

    def _download_http(self, source: Source, out: object) -> None:
        headers = {"Authorization": f"Bearer {source.token}"} if self.gets_token(source) else {}
        try:
            with requests.get(source.href, headers=headers, stream=True, timeout=self.timeout_seconds) as response:
                self._raise_for_status(source, response.status_code, response.reason)
                written = 0
                for chunk in response.iter_content(DOWNLOAD_CHUNK):
                    written += len(chunk)
                    if written > self.max_download_bytes:
                        raise self._too_large(source, written)
                    out.write(chunk)  # type: ignore[attr-defined]
        except requests.Timeout as error:
            raise self._timeout(source, error) from None
        except requests.RequestException as error:
            raise self._unreachable(source, error) from None

    def _download_s3(self, source: Source, out: object) -> None:
        url = urlparse(source.href)
        bucket, key = url.netloc, url.path.lstrip("/")
        client = self.s3.bucket(bucket).client
        try:
            with s3_errors(source.href):
                size = int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        except GeomeshError as error:
            raise self._named(source, error) from None
        if size > self.max_download_bytes:
            raise self._too_large(source, size)
        try:
            with s3_errors(source.href):
                client.download_fileobj(bucket, key, out)
        except GeomeshError as error:
            raise self._named(source, error) from None

    # -- why a read failed ---------------------------------------------------------------------

    def diagnose(self, source: Source, error: Exception) -> GeomeshError:
        """The reason a remote read failed, asked of the data host with the same credentials
        (GDAL's own messages do not say reliably); TransformError when the host serves the file
        and it is the file that cannot be read."""
        if isinstance(error, GeomeshError):
            return error
        unreadable = unprocessable(source.granule_id, "its file could not be read as a raster", error, source.href)
        if source.local_path is not None:
            return unreadable
        try:
            if source.scheme == "s3":
                url = urlparse(source.href)
                with s3_errors(source.href):
                    self.s3.bucket(url.netloc).client.head_object(Bucket=url.netloc, Key=url.path.lstrip("/"))
            else:
                headers = {"Range": "bytes=0-0"} | (
                    {"Authorization": f"Bearer {source.token}"} if self.gets_token(source) else {}
                )
                with requests.get(source.href, headers=headers, stream=True, timeout=self.timeout_seconds) as response:
                    self._raise_for_status(source, response.status_code, response.reason)
        except GeomeshError as found:
            return self._named(source, found)
        except requests.Timeout as timeout:
            return self._timeout(source, timeout)
        except requests.RequestException as failure:
            return self._unreachable(source, failure)
        return unreadable

    def _raise_for_status(self, source: Source, status: int, reason: str) -> None:
        if status in (401, 403):
            hint = (
                "your token was sent and refused"
                if self.gets_token(source)
                else "geomesh sends your bearer token only to the data hosts it is configured to trust "
                "(GEOMESH_TRANSFORMER_TOKEN_HOSTS)"
            )
            raise ForbiddenError(
                f"The data host {source.host} refused granule {source.granule_id} (HTTP {status} {reason}): {hint}."
            )
        if status == 404:
            raise NotFoundError(f"The data host {source.host} has no granule {source.granule_id} at {source.href} (HTTP 404).")
        if status >= 500:
            raise BadGatewayError(
                f"The data host {source.host} failed on granule {source.granule_id} (HTTP {status} {reason}); "
                "try again later."
            )
        if status >= 400:
            raise TransformError(f"The data host {source.host} answered HTTP {status} {reason} for granule {source.granule_id}.")

    def _named(self, source: Source, error: GeomeshError) -> GeomeshError:
        """An S3 error (which names the URL) restated to name the granule and its host too."""
        return type(error)(f"Granule {source.granule_id} on {source.host}: {error.message}")

    @staticmethod
    def _timeout(source: Source, error: Exception) -> GatewayTimeoutError:
        log.warning("granule %s: %s timed out: %s", source.granule_id, source.href, error)
        return GatewayTimeoutError(
            f"The data host {source.host} did not answer in time for granule {source.granule_id}; try again later."
        )

    @staticmethod
    def _unreachable(source: Source, error: Exception) -> BadGatewayError:
        log.warning("granule %s: %s could not be reached: %s", source.granule_id, source.href, error)
        return BadGatewayError(
            f"The data host {source.host} could not be reached for granule {source.granule_id}; try again later."
        )
