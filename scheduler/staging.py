"""Staging: where job outputs are written as they stream in, and read back for download.

Layout: <root>/<job id>/<work item id>/<file name>. A file appears under its final name only once
complete (written as .part, then renamed), so a crash mid-write never leaves a truncated output.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from geomesh.errors import NotFoundError, RequestValidationError

CHUNK_BYTES = 256 * 1024
_SAFE_NAME = re.compile(r"^[\w][\w.+-]*$")


class StagedWriter:
    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self.size = 0

    async def write(self, data: bytes) -> None:
        await asyncio.to_thread(self._file.write, data)
        self.size += len(data)


class LocalStaging:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def href(job_id: str, item_id: int, file_name: str) -> str:
        """The root-relative link the edge serves the file under."""
        return f"/service-results/{job_id}/{item_id}/{quote(file_name)}"

    def _path(self, job_id: str, item_id: str, file_name: str) -> Path:
        if not item_id.isdigit() or not _SAFE_NAME.match(file_name) or not _SAFE_NAME.match(job_id):
            raise NotFoundError(f"No staged output {job_id}/{item_id}/{file_name}")
        return self.root / job_id / item_id / file_name

    @asynccontextmanager
    async def writer(self, job_id: str, item_id: int, file_name: str) -> AsyncIterator[StagedWriter]:
        path = self._path(job_id, str(item_id), file_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Parts left by an earlier attempt whose scheduler died: this attempt holds the lease now.
        for stale in path.parent.glob("*.part"):
            stale.unlink(missing_ok=True)
        partial = path.with_name(path.name + f".{os.getpid()}.part")
        file = await asyncio.to_thread(open, partial, "wb")
        try:
            yield StagedWriter(file)
            await asyncio.to_thread(file.close)
            os.replace(partial, path)
        finally:
            if not file.closed:
                await asyncio.to_thread(file.close)
            partial.unlink(missing_ok=True)

    def size(self, job_id: str, relative: str) -> int:
        item_id, _, file_name = relative.partition("/")
        path = self._path(job_id, item_id, file_name)
        if not path.is_file():
            raise NotFoundError(f"The output {relative} of job {job_id} is no longer staged")
        return path.stat().st_size

    async def read(self, job_id: str, relative: str, offset: int) -> AsyncIterator[bytes]:
        item_id, _, file_name = relative.partition("/")
        path = self._path(job_id, item_id, file_name)
        size = self.size(job_id, relative)
        if not 0 <= offset <= size:
            raise RequestValidationError(f"offset {offset} is outside the file (0..{size})")
        with await asyncio.to_thread(open, path, "rb") as file:
            file.seek(offset)
            while chunk := await asyncio.to_thread(file.read, CHUNK_BYTES):
                yield chunk
