"""The gdal transformer's gRPC service: rangeset work items (streamed files), maps (Render) and map points (Sample).

Streaming, threads and the server are transformers.serving's; this module turns requests into
domain terms. A rendered map is small, so it is returned in one message instead of a file.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable

import grpc

from geomesh.balancer import MESSAGE_LIMIT
from geomesh.errors import (
    PayloadTooLargeError,
    RequestValidationError,
    UnsupportedOperationError,
)
from geomesh.model import optional_bbox
from geomesh.settings import TransformerSettings
from geomesh.shapes import parse_shape
from geomesh.v1 import transformer_pb2, types_pb2
from transformers.gdal import encode
from transformers.gdal.datasets import DatasetPool
from transformers.gdal.grid import map_crs
from transformers.gdal.render import MapGranule, Rendered, RenderSpec, render
from transformers.gdal.sample import Sampled, SampleSpec, sample
from transformers.gdal.subset import EXTENSIONS, SubsetRequest, output_format, subset
from transformers.grids import grid_spec_of
from transformers.serving import (
    Budget,
    FileOutput,
    FileTransformer,
    TransformerServer,
    data_access,
    serve_transformer,
)
from transformers.sources import Source
from transformers.workers import current

# A rendered map travels in one message: leave room under the gRPC message limit.
MAP_BYTES_LIMIT = MESSAGE_LIMIT - 64 * 1024
OPERATIONS = ("variable_subset", "bbox_subset", "shape_subset", "reprojection", "render")
# A map's largest side in pixels (WMS MaxWidth/MaxHeight).
MAX_MAP_SIDE = 4096
_BGCOLOR = re.compile(r"(?:0x|#)?([0-9a-f]{6})", re.IGNORECASE)


def subset_request(item: transformer_pb2.WorkItem, source: Source) -> SubsetRequest:
    """The WorkItem in domain terms; operations this transformer cannot do yet are refused here."""
    _refuse_unsupported(item)
    granule = item.granule
    return SubsetRequest(
        granule_id=granule.id,
        granule_name=granule.name or granule.id,
        source=source,
        media_type=output_format(item.output.format),
        variables=tuple(item.variables),
        bbox=optional_bbox(item),
        # The scheduler sends GeoJSON, which parses quickly enough for the event loop.
        shape=parse_shape(item.shape.content, item.shape.media_type, item.shape.file_name).geometry
        if item.HasField("shape")
        else None,
        grid=grid_spec_of(item.output),
    )


def _refuse_unsupported(item: transformer_pb2.WorkItem) -> None:
    asked: list[str] = []
    if item.dimensions:
        asked.append("dimension subsets (" + ", ".join(d.name for d in item.dimensions) + ")")
    if asked:
        raise UnsupportedOperationError(
            "The gdal transformer does not support " + ", ".join(asked) + " yet; it does variable, "
            "bounding-box and shape subsets, reprojection and regridding."
        )


def render_spec(request: transformer_pb2.RenderRequest, sources: Callable[[types_pb2.Granule], Source]) -> RenderSpec:
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
        granules.append(MapGranule(granule.id, sources(granule), optional_bbox(granule)))
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


def sample_spec(request: transformer_pb2.SampleRequest, sources: Callable[[types_pb2.Granule], Source]) -> SampleSpec:
    """The SampleRequest in domain terms, checked like a map's grid; the pixel must lie on the map."""
    for name, size in (("width", request.width), ("height", request.height)):
        if not 1 <= size <= MAX_MAP_SIDE:
            raise RequestValidationError(f"The map's {name} must be 1 to {MAX_MAP_SIDE} pixels, not {size}.")
    if not (0 <= request.i < request.width and 0 <= request.j < request.height):
        raise RequestValidationError(
            f"The pixel ({request.i}, {request.j}) is not on the {request.width}x{request.height} map."
        )
    if not request.crs.strip():
        raise RequestValidationError("The sample request names no CRS.")
    map_crs(request.crs)
    bounds = (request.min_x, request.min_y, request.max_x, request.max_y)
    if not (all(math.isfinite(value) for value in bounds) and bounds[0] < bounds[2] and bounds[1] < bounds[3]):
        raise RequestValidationError(
            "The map's extent must be finite with min_x < max_x and min_y < max_y; got " + ",".join(map(str, bounds)) + "."
        )
    return SampleSpec(
        granules=tuple(MapGranule(g.id, sources(g), optional_bbox(g)) for g in request.granules),
        variables=tuple(request.variables),
        crs=request.crs,
        bounds=bounds,
        width=request.width,
        height=request.height,
        i=request.i,
        j=request.j,
        feature_count=max(1, request.feature_count),
    )


def _background(bgcolor: str) -> tuple[int, int, int]:
    if not bgcolor.strip():
        return (255, 255, 255)
    match = _BGCOLOR.fullmatch(bgcolor.strip())
    if match is None:
        raise RequestValidationError(f"The map's background colour {bgcolor!r} is not of the form 0xRRGGBB.")
    value = int(match.group(1), 16)
    return (value >> 16, (value >> 8) & 0xFF, value & 0xFF)


def subset_task(request: SubsetRequest, budget: Budget) -> FileOutput:
    """In a worker: the subset, with the worker's open datasets, into the task's scratch folder."""
    state = current()
    pool: DatasetPool = state.resources
    return subset(request, pool, state.scratch, budget)


def render_task(spec: RenderSpec) -> Rendered:
    pool: DatasetPool = current().resources
    return render(spec, pool)


def sample_task(spec: SampleSpec) -> Sampled:
    pool: DatasetPool = current().resources
    return sample(spec, pool)


class GdalTransformer(FileTransformer):
    """Transform (subset, warp, write) and Render (maps); each worker keeps datasets open between requests."""

    family = "gdal"
    operations = OPERATIONS
    output_formats = tuple(EXTENSIONS)

    @staticmethod
    def worker_setup(settings: TransformerSettings) -> DatasetPool:
        return DatasetPool(settings.open_datasets, data_access(settings))

    def prepare(self, item: transformer_pb2.WorkItem) -> Callable[[Budget], FileOutput]:
        work = subset_request(item, self.source(item.granule, item.access_token))
        return functools.partial(subset_task, work)

    async def Render(
        self, request: transformer_pb2.RenderRequest, context: grpc.aio.ServicerContext
    ) -> transformer_pb2.RenderedMap:
        spec = render_spec(request, lambda granule: self.source(granule, request.access_token))
        # At most 4096 x 4096: a light worker's work. Cancelling the wait (the caller left) stops it.
        rendered = await self.light.run(functools.partial(render_task, spec), "a map")
        if len(rendered.content) > MAP_BYTES_LIMIT:
            raise PayloadTooLargeError(
                f"The {spec.width}x{spec.height} map is {len(rendered.content)} bytes encoded: ask for fewer pixels"
            )
        self.output_bytes.inc(len(rendered.content))
        return transformer_pb2.RenderedMap(
            header=transformer_pb2.OutputHeader(
                file_name=rendered.file_name,
                media_type=rendered.media_type,
                bbox=rendered.bbox.to_proto(),
                size_bytes=len(rendered.content),
            ),
            content=rendered.content,
        )

    async def Sample(
        self, request: transformer_pb2.SampleRequest, context: grpc.aio.ServicerContext
    ) -> transformer_pb2.Samples:
        spec = sample_spec(request, lambda granule: self.source(granule, request.access_token))
        sampled = await self.light.run(functools.partial(sample_task, spec), "a map point")
        times = {g.id: g.temporal for g in request.granules if g.HasField("temporal")}
        answer = transformer_pb2.Samples(lon=sampled.lon, lat=sampled.lat)
        for granule in sampled.granules:
            found = answer.granules.add(granule_id=granule.granule_id)
            if granule.granule_id in times:
                found.temporal.CopyFrom(times[granule.granule_id])
            for value in granule.values:
                found.values.add(variable=value.variable, value=value.value, data_type=value.data_type)
        return answer


async def serve(settings: TransformerSettings) -> TransformerServer:
    """Start the gdal transformer on settings.host:settings.port (0 picks a free port)."""
    return await serve_transformer(settings, GdalTransformer)
