"""Staging in S3-compatible object storage: every scheduler and edge, on any host, reaches every output.

An output streams in as a multipart upload, a part uploading while the next fills (an output smaller
than a part is one PUT), and becomes visible only when the upload completes; a failed one is
aborted. boto3 blocks, so every call runs on a thread.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from geomesh.errors import NotFoundError, RequestValidationError
from geomesh.metrics import STAGING_BYTES
from geomesh.s3 import S3Clients, s3_errors, split_s3_url
from scheduler.staging import StagedKey

# S3's smallest part (but the last) is 5 MiB. Memory per output being staged is bounded by
# (PARTS_IN_FLIGHT + 1) parts: 24 MiB.
PART_BYTES = 8 * 1024 * 1024
PARTS_IN_FLIGHT = 2
CHUNK_BYTES = 256 * 1024
_DELETE_BATCH = 1000  # DeleteObjects takes at most this many keys


class _MultipartWriter:
    def __init__(self, client: Any, bucket: str, key: str, media_type: str) -> None:
        self._client, self._bucket, self._key, self._media_type = client, bucket, key, media_type
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._uploading: list[asyncio.Task[None]] = []
        self.size = 0

    async def write(self, data: bytes) -> None:
        self._buffer += data
        self.size += len(data)
        while len(self._buffer) >= PART_BYTES:
            part = bytes(self._buffer[:PART_BYTES])
            del self._buffer[:PART_BYTES]
            await self._upload(part)

    async def _upload(self, part: bytes) -> None:
        """Start uploading the next part, once fewer than PARTS_IN_FLIGHT are still going."""
        if self._upload_id is None:
            started = await asyncio.to_thread(
                self._client.create_multipart_upload, Bucket=self._bucket, Key=self._key, ContentType=self._media_type
            )
            self._upload_id = started["UploadId"]
        while len(self._uploading) >= PARTS_IN_FLIGHT:
            await self._uploading.pop(0)
        number = len(self._parts) + len(self._uploading) + 1
        self._uploading.append(asyncio.create_task(self._upload_part(self._upload_id, number, part)))

    async def _upload_part(self, upload_id: str, number: int, part: bytes) -> None:
        uploaded = await asyncio.to_thread(
            self._client.upload_part,
            Bucket=self._bucket, Key=self._key, UploadId=upload_id, PartNumber=number, Body=part,
        )
        self._parts.append({"ETag": uploaded["ETag"], "PartNumber": number})

    async def _settle(self) -> None:
        """Wait for every part still uploading (raising the first failure)."""
        uploading, self._uploading = self._uploading, []
        results = await asyncio.gather(*uploading, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def complete(self) -> None:
        if self._upload_id is None:
            await asyncio.to_thread(
                self._client.put_object,
                Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer), ContentType=self._media_type,
            )
            return
        if self._buffer:
            await self._upload(bytes(self._buffer))
        await self._settle()
        parts = sorted(self._parts, key=lambda part: part["PartNumber"])
        await asyncio.to_thread(
            self._client.complete_multipart_upload,
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, MultipartUpload={"Parts": parts},
        )

    async def abort(self) -> None:
        with suppress(Exception):  # a part that failed is why we abort
            await self._settle()
        if self._upload_id is not None:
            await asyncio.to_thread(
                self._client.abort_multipart_upload, Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
            )


class S3Staging:
    backend = "s3"

    def __init__(self, url: str, s3: S3Clients) -> None:
        self.bucket, self.prefix = split_s3_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self._s3 = s3

    @property
    def _access(self) -> Any:
        return self._s3.bucket(self.bucket)

    def _key(self, path: str | StagedKey) -> str:
        path = path.path if isinstance(path, StagedKey) else path
        return f"{self.prefix}/{path}" if self.prefix else path

    def s3_url(self, key: StagedKey) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    @asynccontextmanager
    async def writer(self, key: StagedKey, media_type: str) -> AsyncIterator[_MultipartWriter]:
        writer = _MultipartWriter(self._access.client, self.bucket, self._key(key), media_type)
        with s3_errors(self.s3_url(key)):
            try:
                yield writer
                await writer.complete()
                STAGING_BYTES.labels(self.backend).inc(writer.size)
            except BaseException:
                await asyncio.shield(writer.abort())
                raise

    async def size(self, key: StagedKey) -> int:
        try:
            with s3_errors(self.s3_url(key)):
                head = await asyncio.to_thread(self._access.client.head_object, Bucket=self.bucket, Key=self._key(key))
        except NotFoundError:
            raise NotFoundError(f"The output {key.item_id}/{key.file_name} of job {key.job_id} is no longer staged") from None
        return int(head["ContentLength"])

    async def read(self, key: StagedKey, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        size = await self.size(key)
        if not 0 <= offset <= size:
            raise RequestValidationError(f"offset {offset} is outside the file (0..{size})")
        end = size - 1 if length is None else min(size - 1, offset + length - 1)
        if end < offset:
            return
        with s3_errors(self.s3_url(key)):
            got = await asyncio.to_thread(
                self._access.client.get_object, Bucket=self.bucket, Key=self._key(key), Range=f"bytes={offset}-{end}"
            )
            body = got["Body"]
            try:
                while chunk := await asyncio.to_thread(body.read, CHUNK_BYTES):
                    yield chunk
            finally:
                body.close()

    async def presigned_url(self, key: StagedKey, seconds: int, media_type: str) -> str:
        params = {
            "Bucket": self.bucket,
            "Key": self._key(key),
            "ResponseContentType": media_type,
            "ResponseContentDisposition": f'attachment; filename="{key.file_name}"',
        }
        # Signing is local computation: no call to the store.
        return str(self._access.public_client.generate_presigned_url("get_object", Params=params, ExpiresIn=seconds))

    async def delete_job(self, job_id: str) -> int:
        prefix = self._key(StagedKey.of(job_id, 0, "any").job_id + "/")
        client = self._access.client
        deleted = 0
        with s3_errors(f"s3://{self.bucket}/{prefix}"):
            pages = await asyncio.to_thread(lambda: list(client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)))
            keys = [item["Key"] for page in pages for item in page.get("Contents", ())]
            for start in range(0, len(keys), _DELETE_BATCH):
                batch = [{"Key": k} for k in keys[start : start + _DELETE_BATCH]]
                await asyncio.to_thread(client.delete_objects, Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
                deleted += len(batch)
        return deleted

    async def free_bytes(self) -> int | None:
        return None

    async def check_writable(self) -> None:
        """Write and remove a small object where outputs will go, as the first output would."""
        probe = self._key(f".geomesh-write-check-{uuid.uuid4().hex}")
        client = self._access.client
        try:
            with s3_errors(self.url):
                await asyncio.to_thread(client.head_bucket, Bucket=self.bucket)
        except NotFoundError:
            raise RequestValidationError(f"The specified bucket '{self.bucket}' does not exist.") from None
        except Exception:  # noqa: BLE001 - some stores refuse HEAD on a bucket one may still write to
            pass
        try:
            with s3_errors(self.url):
                await asyncio.to_thread(client.put_object, Bucket=self.bucket, Key=probe, Body=b"")
                await asyncio.to_thread(client.delete_object, Bucket=self.bucket, Key=probe)
        except RequestValidationError:
            raise
        except Exception as error:  # noqa: BLE001 - every reason becomes the user's 400, named
            message = getattr(error, "message", str(error))
            raise RequestValidationError(
                f"Do not have write permission to the specified S3 location: '{self.url}' ({message}). "
                "The bucket must exist and geomesh's credentials for it (GEOMESH_S3_BUCKETS) must allow writing."
            ) from None
