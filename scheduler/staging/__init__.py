"""Staging: where job outputs are written as they stream in from transformers, and read back.

Two backends behind one interface, chosen by one setting holding a URL
(`GEOMESH_SCHEDULER_STAGING_URL`): a local folder (`file:///...`, the one-machine default) or
S3-compatible object storage (`s3://bucket/prefix`), which every scheduler and edge on any host can
reach. A job with Harmony's `destinationUrl=s3://...` is written to that bucket instead.

Layout in both: <root or prefix>/<job id>/<work item id>/<file name>. An output is visible under
its name only once complete (a renamed part file, a completed multipart upload).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, unquote, urlparse

from geomesh.errors import NotFoundError, RequestValidationError
from geomesh.s3 import S3Clients

SERVICE_RESULTS = "/service-results/"
_SAFE_NAME = re.compile(r"^[\w][\w.+-]*$")
# Destination buckets remembered; a busy mesh sees few distinct ones.
_DESTINATIONS = 64


@dataclass(frozen=True, slots=True)
class StagedKey:
    """One staged output: <job id>/<work item id>/<file name>, each part checked (no path tricks)."""

    job_id: str
    item_id: int
    file_name: str

    @classmethod
    def of(cls, job_id: str, item_id: int | str, file_name: str) -> StagedKey:
        item = str(item_id)
        if not (item.isascii() and item.isdigit() and len(item) <= 18) or not _SAFE_NAME.match(file_name) or not _SAFE_NAME.match(job_id):
            raise NotFoundError(f"No staged output {job_id}/{item_id}/{file_name}")
        return cls(job_id, int(item_id), file_name)

    @classmethod
    def parse(cls, job_id: str, relative: str) -> StagedKey:
        """From a link's <work item id>/<file name>, as /service-results paths carry it."""
        item_id, _, file_name = relative.partition("/")
        return cls.of(job_id, item_id, file_name)

    @classmethod
    def from_href(cls, href: str) -> StagedKey | None:
        """The output a /service-results link names; None for any other link."""
        if not href.startswith(SERVICE_RESULTS):
            return None
        parts = [unquote(part) for part in href.removeprefix(SERVICE_RESULTS).split("/")]
        return cls.of(*parts) if len(parts) == 3 else None

    @property
    def path(self) -> str:
        return f"{self.job_id}/{self.item_id}/{self.file_name}"

    @property
    def href(self) -> str:
        """The root-relative link every edge serves the output under."""
        return f"{SERVICE_RESULTS}{self.job_id}/{self.item_id}/{quote(self.file_name)}"


class Writer(Protocol):
    size: int

    async def write(self, data: bytes) -> None: ...


class Staging(Protocol):
    url: str
    backend: str  # its metrics' label: file, s3

    def writer(self, key: StagedKey, media_type: str) -> AbstractAsyncContextManager[Writer]:
        """Stream an output in; it appears under its name only if the block ends without error."""
        ...

    async def size(self, key: StagedKey) -> int:
        """NotFoundError if the output is not (or no longer) staged."""
        ...

    def read(self, key: StagedKey, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Bytes from `offset`, `length` of them (None: to the end), a chunk at a time."""
        ...

    async def presigned_url(self, key: StagedKey, seconds: int, media_type: str) -> str | None:
        """A URL clients can fetch the output from directly, or None (a local folder has none)."""
        ...

    def s3_url(self, key: StagedKey) -> str | None:
        """The output as an s3:// URL (Harmony's linktype=s3), or None for a local folder."""
        ...

    async def delete_job(self, job_id: str) -> int:
        """Remove every output of a job; the number of files removed."""
        ...

    async def check_writable(self) -> None:
        """RequestValidationError saying why outputs cannot be written here."""
        ...

    async def free_bytes(self) -> int | None:
        """Free space where outputs go; None where that has no meaning (object storage)."""
        ...


def open_staging(url: str, s3: S3Clients) -> Staging:
    """The backend a staging URL names: file:///folder or s3://bucket/prefix."""
    from scheduler.staging.local import LocalStaging
    from scheduler.staging.s3 import S3Staging

    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStaging(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        return S3Staging(url, s3)
    raise ValueError(f"staging URL {url!r} must be file:///<folder> or s3://<bucket>/<prefix>")


class Stagings:
    """The service's own staging, and the user buckets jobs with a destinationUrl write to."""

    def __init__(self, default: Staging, s3: S3Clients) -> None:
        self.default = default
        self._s3 = s3
        self._destinations: OrderedDict[str, Staging] = OrderedDict()

    def for_destination(self, destination_url: str) -> Staging:
        """A job's staging: its destinationUrl's bucket if it has one, else the service's own."""
        if not destination_url:
            return self.default
        if destination_url not in self._destinations:
            if not destination_url.lower().startswith("s3://"):
                raise RequestValidationError(f"Invalid destinationUrl '{destination_url}', must start with s3://")
            destination = open_staging(destination_url, self._s3)
            if getattr(destination, "bucket", None) == getattr(self.default, "bucket", ""):
                raise RequestValidationError(
                    f"Invalid destinationUrl '{destination_url}': that bucket holds geomesh's own staging; "
                    "give a bucket of your own."
                )
            self._destinations[destination_url] = destination
            while len(self._destinations) > _DESTINATIONS:
                self._destinations.popitem(last=False)
        self._destinations.move_to_end(destination_url)
        return self._destinations[destination_url]
