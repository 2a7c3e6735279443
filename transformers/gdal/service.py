"""The gdal transformer's gRPC service: WorkItem in, a header and the output's bytes out.

Raster work runs on a bounded thread pool so the event loop only relays bytes; the output is
streamed from a scratch file in chunk_bytes pieces and deleted whatever happens to the call.
A rendered map (Render) is small, so it is kept in memory instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import math
import re
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from geomesh.errors import PayloadTooLargeError, RequestValidationError, TransformError, UnsupportedOperationError
from geomesh.metrics import OUTPUT_BYTES
from geomesh.model import BBox, TimeRange, optional_bbox, optional_time
from geomesh.rpc import MESSAGE_LIMIT, RunningServer, start_server
from geomesh.settings import TransformerSettings
from geomesh.v1 import transformer_pb2, transformer_pb2_grpc
from transformers.gdal import encode
from transformers.gdal.datasets import DatasetPool
from transformers.gdal.grid import map_crs
from transformers.gdal.render import MapGranule, Rendered, RenderSpec, render
from transformers.gdal.reproject import grid_spec
from transformers.gdal.subset import EXTENSIONS, SubsetRequest, SubsetResult, output_format, subset

SERVICE = "transformer-gdal"
SERVICE_NAME = "geomesh.v1.Transformer"
# A rendered map travels in one message: leave room under the gRPC message limit.
MAP_BYTES_LIMIT = MESSAGE_LIMIT - 64 * 1024
OPERATIONS = ["variable_subset", "bbox_subset", "reprojection", "render"]
# A map's largest side in pixels (WMS MaxWidth/MaxHeight).
MAX_MAP_SIDE = 4096
_BGCOLOR = re.compile(r"(?:0x|#)?([0-9a-f]{6})", re.IGNORECASE)


def subset_request(item: transformer_pb2.WorkItem) -> SubsetRequest:
    """The WorkItem in domain terms; operations this transformer cannot do yet are refused here."""
    _refuse_unsupported(item)
    granule = item.granule
    if not granule.id:
        raise RequestValidationError("The work item names no granule.")
    if not granule.links:
        raise TransformError(f"Granule {granule.id} has no data link to read.")
    return SubsetRequest(
        granule_id=granule.id,
        granule_name=granule.name or granule.id,
        href=granule.links[0].href,
        media_type=output_format(item.output.format),
        variables=tuple(item.variables),
        bbox=optional_bbox(item),
        grid=grid_spec(
            crs=item.output.crs.strip() or None,
            interpolation=item.output.interpolation or None,
            extent=item.output.scale_extent,
            size=item.output.scale_size,
            width=item.output.width if item.output.HasField("width") else None,
            height=item.output.height if item.output.HasField("height") else None,
        ),
    )


def _refuse_unsupported(item: transformer_pb2.WorkItem) -> None:
    asked: list[str] = []
    if item.dimensions:
        asked.append("dimension subsets (" + ", ".join(d.name for d in item.dimensions) + ")")
    if item.HasField("shape") and (item.shape.content or item.shape.file_name):
        asked.append("shape subsets")
    if asked:
        raise UnsupportedOperationError(
            "The gdal transformer does not support " + ", ".join(asked) + " yet; it does variable and "
            "bounding-box subsets, reprojection and regridding."
        )


def render_spec(request: transformer_pb2.RenderRequest) -> RenderSpec:
    """The RenderRequest in domain terms, checked: what needs the files (variable names) is checked later."""
    for name, size in (("width", request.width), ("height", request.height)):
        if not 1 <= size <= MAX_MAP_SIDE:
            raise RequestValidationError(f"The map's {name} must be 1 to {MAX_MAP_SIDE} pixels, not {size}.")
    media_type = request.format.split(";", 1)[0].strip().lower() or encode.PNG
    if media_type not in encode.EXTENSIONS:
        raise UnsupportedOperationError(
            f"The gdal transformer cannot draw a map as {request.format!r}; it draws these formats: "
            + ", ".join(encode.EXTENSIONS) + "."
        )
    if request.style.strip().lower() not in ("", "default"):
        raise RequestValidationError(f"Style {request.style!r} is not defined: maps have only the default style.")
    if len(request.variables) not in (0, 1, 3):
        raise RequestValidationError(
            f"A map draws one variable (on a colour ramp) or three (red, green, blue), not {len(request.variables)}: "
            + ", ".join(request.variables) + "."
        )
    if not request.crs.strip():
        raise RequestValidationError("The map request names no CRS.")
    map_crs(request.crs)  # RequestValidationError if unreadable
    bounds = (request.min_x, request.min_y, request.max_x, request.max_y)
    if not (all(math.isfinite(value) for value in bounds) and bounds[0] < bounds[2] and bounds[1] < bounds[3]):
        raise RequestValidationError(
            "The map's extent must be finite with min_x < max_x and min_y < max_y; got "
            + ",".join(map(str, bounds)) + "."
        )
    granules = []
    for granule in request.granules:
        if not granule.links:
            raise TransformError(f"Granule {granule.id} has no data link to read.")
        granules.append(MapGranule(granule.id, granule.links[0].href, optional_bbox(granule)))
    return RenderSpec(
        granules=tuple(granules),
        variables=tuple(request.variables),
        crs=request.crs,
        bounds=bounds,
        width=request.width,
        height=request.height,
        media_type=media_type,
        transparent=request.transparent,
        background=_background(request.bgcolor),
    )


def _background(bgcolor: str) -> tuple[int, int, int]:
    if not bgcolor.strip():
        return (255, 255, 255)
    match = _BGCOLOR.fullmatch(bgcolor.strip())
    if match is None:
        raise RequestValidationError(f"The map's background colour {bgcolor!r} is not of the form 0xRRGGBB.")
    value = int(match.group(1), 16)
    return (value >> 16, (value >> 8) & 0xFF, value & 0xFF)


class GdalTransformer(transformer_pb2_grpc.TransformerServicer):
    """Serves Describe, Transform and Render; owns the worker threads and the open-dataset pool."""

    def __init__(self, settings: TransformerSettings) -> None:
        self._settings = settings
        self._pool = DatasetPool(settings.open_datasets)
        self._executor = concurrent.futures.ThreadPoolExecutor(settings.workers, thread_name_prefix="gdal")
        self._output_bytes = OUTPUT_BYTES.labels(SERVICE)

    async def Describe(
        self, request: transformer_pb2.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> transformer_pb2.TransformerInfo:
        return transformer_pb2.TransformerInfo(family="gdal", output_formats=list(EXTENSIONS), operations=OPERATIONS)

    async def Transform(
        self, request: transformer_pb2.WorkItem, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[transformer_pb2.OutputChunk]:
        work = subset_request(request)
        granule_bbox = optional_bbox(request.granule)
        temporal = optional_time(request.granule)
        result = await self._run(work)
        try:
            yield transformer_pb2.OutputChunk(header=_header(result, granule_bbox, temporal, work.granule_id))
            loop = asyncio.get_running_loop()
            with open(result.path, "rb") as output:
                while chunk := await loop.run_in_executor(None, output.read, self._settings.chunk_bytes):
                    self._output_bytes.inc(len(chunk))
                    yield transformer_pb2.OutputChunk(data=chunk)
        finally:
            result.path.unlink(missing_ok=True)

    async def Render(
        self, request: transformer_pb2.RenderRequest, context: grpc.aio.ServicerContext
    ) -> transformer_pb2.RenderedMap:
        spec = render_spec(request)
        # Cancelling the wait (the caller left) also cancels a render that has not started.
        rendered: Rendered = await asyncio.wrap_future(self._executor.submit(render, spec, self._pool))
        if len(rendered.content) > MAP_BYTES_LIMIT:
            raise PayloadTooLargeError(
                f"The {spec.width}x{spec.height} map is {len(rendered.content)} bytes encoded: ask for fewer pixels"
            )
        self._output_bytes.inc(len(rendered.content))
        return transformer_pb2.RenderedMap(
            header=transformer_pb2.OutputHeader(
                file_name=rendered.file_name,
                media_type=rendered.media_type,
                bbox=rendered.bbox.to_proto(),
                size_bytes=len(rendered.content),
            ),
            content=rendered.content,
        )

    async def _run(self, work: SubsetRequest) -> SubsetResult:
        """Subset on a worker thread; if the caller goes away first, the output is deleted when done."""
        future = self._executor.submit(subset, work, self._pool, self._settings.scratch_dir)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.add_done_callback(_discard_output)
            raise

    async def close(self) -> None:
        """Let running work finish, then close every pooled dataset."""
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        self._pool.close()


def _discard_output(future: concurrent.futures.Future[SubsetResult]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().path.unlink(missing_ok=True)


def _header(
    result: SubsetResult, granule_bbox: BBox | None, temporal: TimeRange | None, granule_id: str
) -> transformer_pb2.OutputHeader:
    header = transformer_pb2.OutputHeader(
        file_name=result.file_name,
        media_type=result.media_type,
        granule_id=granule_id,
        size_bytes=result.size_bytes,
    )
    bbox = result.bbox or granule_bbox
    if bbox is not None:
        header.bbox.CopyFrom(bbox.to_proto())
    if temporal is not None:
        header.temporal.CopyFrom(temporal.to_proto())
    return header


@dataclasses.dataclass
class TransformerServer(RunningServer):
    """A running transformer; stopping it also closes its threads and open datasets."""

    transformer: GdalTransformer | None = None

    async def stop(self, grace: float = 5.0) -> None:
        await super().stop(grace)
        if self.transformer is not None:
            await self.transformer.close()


async def serve(settings: TransformerSettings) -> TransformerServer:
    """Start the gdal transformer on settings.host:settings.port (0 picks a free port)."""
    if settings.scratch_dir is not None:
        Path(settings.scratch_dir).mkdir(parents=True, exist_ok=True)
    transformer = GdalTransformer(settings)
    running = await start_server(
        SERVICE,
        lambda server: transformer_pb2_grpc.add_TransformerServicer_to_server(transformer, server),
        [SERVICE_NAME],
        host=settings.host,
        port=settings.port,
        metrics_port=settings.metrics_port,
    )
    fields = {field.name: getattr(running, field.name) for field in dataclasses.fields(running)}
    return TransformerServer(**fields, transformer=transformer)
