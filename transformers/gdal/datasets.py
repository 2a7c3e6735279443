"""A thread-safe pool of open rasterio datasets, so GDAL's block cache makes repeated crops cheap.

A rasterio dataset must not be used by two threads at once: each handle is lent to one thread
at a time, and a path that is busy everywhere gets another handle of its own. Remote links are
read with their own credentials (transformers.sources), set for the calling thread only while the
handle is lent; a link that needs the caller's token is read from a private copy, never pooled.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import rasterio
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader

from transformers.sources import DataAccess, Source


def _version(path: str) -> tuple[int, int] | None:
    """Modification time and size of a local file, so a rewritten file is not served stale."""
    if path.startswith("/vsi"):
        return None
    stat = os.stat(path)  # FileNotFoundError here is clearer than GDAL's message
    return stat.st_mtime_ns, stat.st_size


_Key = tuple[str, tuple[int, int] | None]  # path, local file version


class DatasetPool:
    """Idle handles per path, least recently used path evicted first above `max_idle` handles."""

    def __init__(self, max_idle: int, access: DataAccess | None = None) -> None:
        self.access = access or DataAccess()
        self._max_idle = max_idle
        self._idle: OrderedDict[_Key, list[DatasetReader]] = OrderedDict()
        self._idle_count = 0
        self._closed = False
        self._lock = threading.Lock()

    @property
    def idle_count(self) -> int:
        return self._idle_count

    @contextmanager
    def open(self, source: Source, scratch_dir: Path | None = None) -> Iterator[DatasetReader]:
        """Lend an open dataset of `source` to the calling thread until the block exits.

        GDAL's failures, opening or reading in the block, become the geomesh error that says why
        (a data host's refusal, a timeout, an unreadable file).
        """
        if self.access.gets_token(source):
            # Not pooled: the copy is deleted when the block ends, and with it the disk it takes.
            with self.access.local_file(source, scratch_dir) as copy:
                try:
                    with rasterio.open(copy) as dataset:
                        yield dataset
                except (RasterioError, OSError) as error:
                    raise self.access.diagnose(Source(source.granule_id, str(copy)), error) from error
            return
        path = self.access.gdal_path(source)
        try:
            with self.access.gdal_env(source):
                key = (path, _version(path))
                dataset = self._take(key)
                if dataset is None:
                    dataset = rasterio.open(path)
                try:
                    yield dataset
                finally:
                    self._give_back(key, dataset)
        except (RasterioError, OSError) as error:
            raise self.access.diagnose(source, error) from error

    def close(self) -> None:
        """Close every idle handle; handles in use are closed when they come back."""
        with self._lock:
            self._closed = True
            handles = [dataset for datasets in self._idle.values() for dataset in datasets]
            self._idle.clear()
            self._idle_count = 0
        for dataset in handles:
            dataset.close()

    def _take(self, key: _Key) -> DatasetReader | None:
        with self._lock:
            handles = self._idle.get(key)
            if not handles:
                return None
            dataset = handles.pop()
            self._idle_count -= 1
            if not handles:
                del self._idle[key]
            return dataset

    def _give_back(self, key: _Key, dataset: DatasetReader) -> None:
        evicted: list[DatasetReader] = []
        with self._lock:
            if self._closed or self._max_idle == 0:
                evicted.append(dataset)
            else:
                self._idle.setdefault(key, []).append(dataset)
                self._idle.move_to_end(key)
                self._idle_count += 1
                while self._idle_count > self._max_idle:
                    oldest_key, oldest = next(iter(self._idle.items()))
                    evicted.append(oldest.pop(0))
                    self._idle_count -= 1
                    if not oldest:
                        del self._idle[oldest_key]
        for handle in evicted:  # closing may flush to disk: outside the lock
            handle.close()
