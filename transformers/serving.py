"""What every transformer shares: raster work in worker processes, its output file streamed, then deleted.

A transformer family (gdal, netcdf, swath) subclasses FileTransformer and implements `prepare`:
check a WorkItem on the event loop (bad requests fail fast, before a worker is taken) and return
the task that writes the output to a scratch file, given the request's Budget. Everything else
lives here once: the worker pools (transformers.workers), streaming in chunk_bytes pieces, deleting
the output whatever happens to the call, and the gRPC server.

Two pools: light workers take the items that look small (an area's subset, not warped) and hand
one on to the heavy workers as soon as its output grid turns out larger than `light_pixels`;
warps and whole granules go to the heavy workers at once. So a crop is never stuck behind
whole-granule warps. Each pool queues at most `max_queued` items (beyond them: a 429). A request whose output
would exceed `max_output_bytes` in memory is refused (413) before any pixel is read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import shutil
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from geomesh.errors import (
    GeomeshError,
    PayloadTooLargeError,
    RequestValidationError,
    ServiceUnavailableError,
    TransformError,
    UnsupportedOperationError,
)
from geomesh.metrics import OUTPUT_BYTES, TRANSFORMER_REFUSED
from geomesh.model import BBox, optional_bbox, optional_time
from geomesh.rpc import RunningServer, start_server
from geomesh.s3 import S3Clients
from geomesh.settings import TransformerSettings
from geomesh.v1 import transformer_pb2, transformer_pb2_grpc, types_pb2
from transformers.scratch import Scratch
from transformers.sources import DataAccess, Source
from transformers.workers import WorkerPool

SERVICE_NAME = "geomesh.v1.Transformer"


@dataclasses.dataclass(frozen=True, slots=True)
class FileOutput:
    """One granule's output, written to a scratch file that the service streams and deletes."""

    path: Path
    media_type: str
    file_name: str
    # The output's extent in WGS84; None when unknown (the granule's own bbox is reported then).
    bbox: BBox | None
    size_bytes: int


@dataclasses.dataclass(frozen=True, slots=True)
class Budget:
    """What one item may cost: its output's size in memory, and (on a light worker) its pixels."""

    max_bytes: int | None = None
    light_pixels: int | None = None  # None: any number (a heavy worker)

    def check(self, what: str, width: int, height: int, bands: int, itemsize: int) -> None:
        """413 above max_bytes; NeedsHeavyWorker when a light worker should not do it."""
        self.check_bytes(what, width * height * max(1, bands) * itemsize, f"{width} x {height} pixels x {bands} variables")
        if self.light_pixels is not None and width * height > self.light_pixels:
            raise NeedsHeavyWorker(what)

    def check_bytes(self, what: str, size: int, shape: str) -> None:
        if self.max_bytes is not None and size > self.max_bytes:
            raise PayloadTooLargeError(
                f"The output of {what} would be {shape} ({size >> 20} MiB in memory), more than the "
                f"{self.max_bytes >> 20} MiB one request may use: ask for a smaller area, fewer variables or a "
                "coarser grid (scaleSize, width/height)."
            )


class NeedsHeavyWorker(GeomeshError):
    """Raised on a light worker: this item is too big for it (never reaches a client)."""


def data_access(settings: TransformerSettings) -> DataAccess:
    return DataAccess(
        allowed_urls=tuple(settings.allowed_urls),
        token_hosts=tuple(settings.token_hosts),
        s3=S3Clients(settings.s3),
        timeout_seconds=settings.http_timeout_seconds,
        max_download_bytes=settings.max_download_bytes,
    )


class FileTransformer(transformer_pb2_grpc.TransformerServicer):
    """Describe and Transform for a family; subclasses say what they do and implement `prepare`."""

    family: str = ""
    operations: tuple[str, ...] = ()
    output_formats: tuple[str, ...] = ()
    # Whether items may go to a light worker first (families that can tell their output grid early).
    light_first: bool = True

    def __init__(self, settings: TransformerSettings) -> None:
        self.settings = settings
        self.output_bytes = OUTPUT_BYTES.labels(f"transformer-{self.family}")
        # Scratch files of this process only (its workers' tasks below it); a killed predecessor's are swept here.
        self.scratch = Scratch.open(settings.scratch_dir, self.family)
        self.access = data_access(settings)
        setup = functools.partial(type(self).worker_setup, settings)
        pools = {"light": settings.light_workers, "heavy": settings.workers}
        self.light, self.heavy = (
            WorkerPool(
                f"{self.family}-{kind}", self.family, kind, setup, size, self.scratch.path, max_queued=settings.max_queued,
                memory_limit_bytes=settings.worker_memory_bytes, gdal_cache_bytes=settings.gdal_cache_bytes,
            )
            for kind, size in pools.items()
        )

    @staticmethod
    def worker_setup(settings: TransformerSettings) -> Any:
        """What the family's tasks use in a worker (open datasets, ...), made once per worker."""
        return data_access(settings)

    async def start(self) -> None:
        await asyncio.gather(self.light.start(), self.heavy.start())

    def source(self, granule: types_pb2.Granule, token: str) -> Source:
        """The granule's data link, read with the caller's token where its host takes it."""
        if not granule.id:
            raise RequestValidationError("The work item names no granule.")
        if not granule.links:
            raise TransformError(f"Granule {granule.id} has no data link to read.")
        source = Source(granule.id, granule.links[0].href, token)
        self.access.check(source)
        return source

    def may_be_light(self, item: transformer_pb2.WorkItem) -> bool:
        """Whether the item may be a light worker's: a subset of an area, written as it is. Warps and
        whole granules go straight to the heavy workers, so they never fill the light workers' queue."""
        output = item.output
        warps = bool(output.crs or output.scale_extent or output.scale_size or output.HasField("width") or output.HasField("height"))
        return self.light_first and not warps and (item.HasField("bbox") or item.HasField("shape"))

    def prepare(self, item: transformer_pb2.WorkItem) -> Callable[[Budget], FileOutput]:
        """Check the item (raising geomesh.errors for bad ones) and return the task to run in a
        worker: a module-level function with its (picklable) arguments, taking the item's Budget."""
        raise NotImplementedError

    async def Describe(
        self, request: transformer_pb2.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> transformer_pb2.TransformerInfo:
        return transformer_pb2.TransformerInfo(
            family=self.family, output_formats=list(self.output_formats), operations=list(self.operations)
        )

    async def Transform(
        self, request: transformer_pb2.WorkItem, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[transformer_pb2.OutputChunk]:
        task = self.prepare(request)
        result = await self.run(task, f"granule {request.granule.id}", light=self.may_be_light(request))
        try:
            yield transformer_pb2.OutputChunk(header=_header(result, request.granule))
            loop = asyncio.get_running_loop()
            with open(result.path, "rb") as output:
                while chunk := await loop.run_in_executor(None, output.read, self.settings.chunk_bytes):
                    self.output_bytes.inc(len(chunk))
                    yield transformer_pb2.OutputChunk(data=chunk)
        finally:
            shutil.rmtree(result.path.parent, ignore_errors=True)  # the task's own scratch folder

    async def Render(
        self, request: transformer_pb2.RenderRequest, context: grpc.aio.ServicerContext
    ) -> transformer_pb2.RenderedMap:
        """Families that draw no maps say so (a WMS OperationNotSupported), not gRPC's bare "Method not implemented!"."""
        raise UnsupportedOperationError(
            f"The {self.family} transformer does not draw maps: this collection has no WMS GetMap; use the "
            "rangeset (e.g. format=image/tiff) instead."
        )

    async def Sample(
        self, request: transformer_pb2.SampleRequest, context: grpc.aio.ServicerContext
    ) -> transformer_pb2.Samples:
        """Like Render: a family that draws no maps has no map pixels to query (WMS GetFeatureInfo)."""
        raise UnsupportedOperationError(
            f"The {self.family} transformer does not draw maps, so it has no map pixels to query: this collection "
            "has no WMS GetFeatureInfo; use the rangeset instead."
        )

    async def run(self, task: Callable[[Budget], FileOutput], what: str, *, light: bool) -> FileOutput:
        """The task on a light worker (if `light`), or a heavy one if it is (or turns out) too big;
        its output stays in its scratch folder until the caller removes it. A caller that goes away
        stops it."""
        used = self.scratch.used_bytes()
        if used > self.settings.max_scratch_bytes:
            TRANSFORMER_REFUSED.labels(self.family, "scratch_full").inc()
            raise ServiceUnavailableError(
                f"The {self.family} transformer's scratch space is full ({used >> 20} MiB of outputs still being "
                "made or sent); try again shortly.",
                retry_after=5,
            )
        budget = Budget(self.settings.max_output_bytes, self.settings.light_pixels)
        try:
            if light:
                try:
                    return await self.light.run(functools.partial(task, budget), what, keep_scratch=True)
                except NeedsHeavyWorker:
                    pass
            heavy = dataclasses.replace(budget, light_pixels=None)
            return await self.heavy.run(functools.partial(task, heavy), what, keep_scratch=True)
        except PayloadTooLargeError:
            TRANSFORMER_REFUSED.labels(self.family, "too_large").inc()
            raise

    async def close(self) -> None:
        """Stop the workers (work still running is killed); subclasses also release what they keep."""
        await asyncio.gather(self.light.close(), self.heavy.close())
        self.scratch.close()


def chosen_format(media_type: str, family: str, formats: Sequence[str], aliases: Mapping[str, str] | None = None) -> str:
    """The supported media type asked for (parameters and case ignored; empty: the first), or
    UnsupportedOperationError naming what the family writes."""
    normalized = media_type.split(";", 1)[0].strip().lower() or formats[0]
    normalized = (aliases or {}).get(normalized, normalized)
    if normalized not in formats:
        raise UnsupportedOperationError(
            f"The {family} transformer cannot write {media_type!r}; it writes these formats: {', '.join(formats)}."
        )
    return normalized


def _header(result: FileOutput, granule: types_pb2.Granule) -> transformer_pb2.OutputHeader:
    header = transformer_pb2.OutputHeader(
        file_name=result.file_name, media_type=result.media_type, granule_id=granule.id, size_bytes=result.size_bytes
    )
    bbox = result.bbox or optional_bbox(granule)
    if bbox is not None:
        header.bbox.CopyFrom(bbox.to_proto())
    temporal = optional_time(granule)
    if temporal is not None:
        header.temporal.CopyFrom(temporal.to_proto())
    return header


@dataclasses.dataclass
class TransformerServer(RunningServer):
    """A running transformer; stopping it also closes its threads and what it keeps open."""

    transformer: FileTransformer | None = None

    async def stop(self, grace: float = 5.0) -> None:
        await super().stop(grace)
        if self.transformer is not None:
            await self.transformer.close()


async def serve_transformer(
    settings: TransformerSettings, make: Callable[[TransformerSettings], FileTransformer]
) -> TransformerServer:
    """Start a transformer on settings.host:settings.port (0 picks a free port)."""
    transformer = make(settings)
    await transformer.start()
    running = await start_server(
        f"transformer-{transformer.family}",
        lambda server: transformer_pb2_grpc.add_TransformerServicer_to_server(transformer, server),
        [SERVICE_NAME],
        host=settings.host,
        port=settings.port,
        metrics_port=settings.metrics_port,
        metrics_host=settings.metrics_host,
        identity="transformer",
        mesh=settings.mesh,
    )
    fields = {field.name: getattr(running, field.name) for field in dataclasses.fields(running)}
    return TransformerServer(**fields, transformer=transformer)
