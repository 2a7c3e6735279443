"""Granule files the embedded catalog serves itself: data links "/data/<path>" point below its data folder."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from geomesh.errors import GeomeshError, NotFoundError

CHUNK_BYTES = 256 * 1024
# Only granule files are public: the data folder may also hold catalog.json and services' state.
PUBLIC_FOLDER = "granules"


@dataclass
class OpenFile:
    file: BinaryIO
    size: int  # when it was opened; a file that changes while it is read fails rather than mixes versions

    async def chunks(self, offset: int, chunk_bytes: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
        """The bytes from `offset` to the end, one chunk in memory at a time, read off the event loop."""
        await asyncio.to_thread(self.file.seek, offset)
        remaining = self.size - offset
        while remaining > 0:
            chunk = await asyncio.to_thread(self.file.read, min(chunk_bytes, remaining))
            if not chunk:
                raise GeomeshError("The file became shorter while it was being read; try again")
            remaining -= len(chunk)
            yield chunk


class DataFolder:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def locate(self, path: str) -> Path:
        """The file a data path names; NotFoundError for anything but a file inside the public folder."""
        relative = PurePosixPath(path)
        if not path or "\x00" in path or relative.is_absolute() or ".." in relative.parts:
            raise NotFoundError(f"The data path {path!r} is not a file below this catalog's data folder")
        public = (self.root / PUBLIC_FOLDER).resolve()
        # resolve() follows symbolic links, so a link that leads out of the folder is caught here.
        target = (self.root / relative).resolve()
        if not target.is_relative_to(public):
            raise NotFoundError(
                f"The data path {path!r} is not served: only files under {PUBLIC_FOLDER}/ are, "
                f"e.g. /data/{PUBLIC_FOLDER}/<collection id>/<file name>"
            )
        if not target.is_file():
            raise NotFoundError(f"The file {path} does not exist in this catalog's data folder")
        return target

    def _open(self, path: str) -> OpenFile:
        target = self.locate(path)
        try:
            file = open(target, "rb")
        except FileNotFoundError:  # removed since locate() looked
            raise NotFoundError(f"The file {path} does not exist in this catalog's data folder") from None
        return OpenFile(file, os.fstat(file.fileno()).st_size)

    @asynccontextmanager
    async def open(self, path: str) -> AsyncIterator[OpenFile]:
        opened = await asyncio.to_thread(self._open, path)
        try:
            yield opened
        finally:
            opened.file.close()
