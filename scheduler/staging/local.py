"""Staging in a local folder: the one-machine default. Written as a part file, then renamed."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import BinaryIO

from geomesh.errors import NotFoundError, RequestValidationError, ServiceUnavailableError
from geomesh.metrics import STAGING_BYTES
from scheduler.staging import StagedKey

CHUNK_BYTES = 256 * 1024


class _FileWriter:
    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self.size = 0

    async def write(self, data: bytes) -> None:
        with _disk_errors():
            await asyncio.to_thread(self._file.write, data)
        self.size += len(data)


@contextmanager
def _disk_errors() -> Iterator[None]:
    """A full or failing disk: a transient error the job records (and tries again later), no paths."""
    try:
        yield
    except OSError as error:
        raise ServiceUnavailableError(
            f"The staging folder cannot take the output right now ({error.strerror or error}); it will be tried again."
        ) from None


class LocalStaging:
    backend = "file"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.url = self.root.as_uri()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: StagedKey) -> Path:
        return self.root / key.job_id / str(key.item_id) / key.file_name

    @asynccontextmanager
    async def writer(self, key: StagedKey, media_type: str) -> AsyncIterator[_FileWriter]:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Parts left by an earlier attempt whose scheduler died: this attempt holds the lease now.
        for stale in path.parent.glob("*.part"):
            stale.unlink(missing_ok=True)
        partial = path.with_name(path.name + f".{os.getpid()}.part")
        with _disk_errors():
            file = await asyncio.to_thread(open, partial, "wb")
        try:
            yield _FileWriter(file)
            with _disk_errors():
                await asyncio.to_thread(file.close)
                os.replace(partial, path)
            STAGING_BYTES.labels(self.backend).inc(path.stat().st_size)
        finally:
            if not file.closed:
                await asyncio.to_thread(file.close)
            partial.unlink(missing_ok=True)

    async def size(self, key: StagedKey) -> int:
        path = self._path(key)
        if not path.is_file():
            raise NotFoundError(f"The output {key.item_id}/{key.file_name} of job {key.job_id} is no longer staged")
        return path.stat().st_size

    async def read(self, key: StagedKey, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        size = await self.size(key)
        if not 0 <= offset <= size:
            raise RequestValidationError(f"offset {offset} is outside the file (0..{size})")
        remaining = size - offset if length is None else min(length, size - offset)
        with await asyncio.to_thread(open, self._path(key), "rb") as file:
            file.seek(offset)
            while remaining > 0 and (chunk := await asyncio.to_thread(file.read, min(CHUNK_BYTES, remaining))):
                remaining -= len(chunk)
                yield chunk

    async def presigned_url(self, key: StagedKey, seconds: int, media_type: str) -> str | None:
        return None

    def s3_url(self, key: StagedKey) -> str | None:
        return None

    async def delete_job(self, job_id: str) -> int:
        folder = self.root / StagedKey.of(job_id, 0, "x").job_id
        files = sum(1 for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else 0
        await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
        return files

    async def free_bytes(self) -> int | None:
        return (await asyncio.to_thread(shutil.disk_usage, self.root)).free

    async def check_writable(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise RequestValidationError(f"The staging folder {self.root} is not writable")
