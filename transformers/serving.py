"""What every transformer shares: blocking work off the event loop, its output file streamed, then deleted.

A transformer family (gdal, netcdf, swath) subclasses FileTransformer and implements `prepare`:
check a WorkItem on the event loop (bad requests fail fast, before a thread is taken) and return
the blocking function that writes the output to a scratch file. Everything else (the worker
threads, streaming in chunk_bytes pieces, deleting the file whatever happens to the call, the
gRPC server) lives here once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path

import grpc

from geomesh.errors import (
    RequestValidationError,
    TransformError,
    UnsupportedOperationError,
)
from geomesh.metrics import OUTPUT_BYTES
from geomesh.model import BBox, optional_bbox, optional_time
from geomesh.rpc import RunningServer, start_server
from geomesh.s3 import S3Clients
from geomesh.settings import TransformerSettings
from geomesh.v1 import transformer_pb2, transformer_pb2_grpc, types_pb2
from transformers.scratch import Scratch
from transformers.sources import DataAccess, Source

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


class FileTransformer(transformer_pb2_grpc.TransformerServicer):
    """Describe and Transform for a family; subclasses say what they do and implement `prepare`."""

    family: str = ""
    operations: tuple[str, ...] = ()
    output_formats: tuple[str, ...] = ()

    def __init__(self, settings: TransformerSettings) -> None:
        self.settings = settings
        self.executor = concurrent.futures.ThreadPoolExecutor(settings.workers, thread_name_prefix=self.family)
        self.output_bytes = OUTPUT_BYTES.labels(f"transformer-{self.family}")
        # Scratch files of this process only; a killed predecessor's are swept here.
        self.scratch = Scratch.open(settings.scratch_dir, self.family)
        self.access = DataAccess(
            allowed_urls=tuple(settings.allowed_urls),
            token_hosts=tuple(settings.token_hosts),
            s3=S3Clients(settings.s3),
            timeout_seconds=settings.http_timeout_seconds,
            max_download_bytes=settings.max_download_bytes,
        )

    def source(self, granule: types_pb2.Granule, token: str) -> Source:
        """The granule's data link, read with the caller's token where its host takes it."""
        if not granule.id:
            raise RequestValidationError("The work item names no granule.")
        if not granule.links:
            raise TransformError(f"Granule {granule.id} has no data link to read.")
        source = Source(granule.id, granule.links[0].href, token)
        self.access.check(source)
        return source

    def prepare(self, item: transformer_pb2.WorkItem) -> Callable[[], FileOutput]:
        """Check the item (raising geomesh.errors for bad ones) and return the blocking work to run."""
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
        work = self.prepare(request)
        result = await self._run(work)
        try:
            yield transformer_pb2.OutputChunk(header=_header(result, request.granule))
            loop = asyncio.get_running_loop()
            with open(result.path, "rb") as output:
                while chunk := await loop.run_in_executor(None, output.read, self.settings.chunk_bytes):
                    self.output_bytes.inc(len(chunk))
                    yield transformer_pb2.OutputChunk(data=chunk)
        finally:
            result.path.unlink(missing_ok=True)

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

    async def _run(self, work: Callable[[], FileOutput]) -> FileOutput:
        """Run on a worker thread; if the caller goes away first, the output is deleted when done."""
        future = self.executor.submit(work)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.add_done_callback(_discard_output)
            raise

    async def close(self) -> None:
        """Let running work finish; subclasses also release what they keep open."""
        await asyncio.to_thread(self.executor.shutdown, wait=True, cancel_futures=True)
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


def _discard_output(future: concurrent.futures.Future[FileOutput]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().path.unlink(missing_ok=True)


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
