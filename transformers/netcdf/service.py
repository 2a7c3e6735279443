"""The netcdf transformer's gRPC service: WorkItems in, one streamed NetCDF4, Zarr (zipped) or COG file out.

Streaming, threads and the server are transformers.serving's; this module turns a WorkItem into
domain terms and refuses, before a thread is taken, what needs no file to refuse.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from geomesh.errors import (
    RequestValidationError,
    UnsupportedOperationError,
)
from geomesh.model import optional_bbox, optional_time
from geomesh.settings import TransformerSettings
from geomesh.v1 import transformer_pb2
from transformers.grids import grid_spec_of
from transformers.netcdf.process import NetcdfRequest, process
from transformers.netcdf.subset import DimensionRange
from transformers.netcdf.writers import EXTENSIONS, NETCDF4
from transformers.serving import (
    Budget,
    FileOutput,
    FileTransformer,
    TransformerServer,
    chosen_format,
    serve_transformer,
)
from transformers.sources import DataAccess, Source
from transformers.workers import current

OPERATIONS = ("variable_subset", "bbox_subset", "temporal_subset", "dimension_subset", "reprojection", "reformat")


def output_format(media_type: str) -> str:
    """The supported media type asked for (parameters and case ignored), or UnsupportedOperationError."""
    # application/netcdf: Harmony's older name for the same thing.
    return chosen_format(media_type, "netcdf", list(EXTENSIONS), {"application/netcdf": NETCDF4})


def netcdf_request(item: transformer_pb2.WorkItem, source: Source) -> NetcdfRequest:
    """The WorkItem in domain terms; what this transformer cannot do is refused here."""
    if item.HasField("shape") and (item.shape.content or item.shape.file_name):
        raise UnsupportedOperationError(
            "The netcdf transformer does not support shape subsets; it does variable, bounding-box, time and "
            "dimension subsets, reprojection and regridding."
        )
    granule = item.granule
    names = [d.name for d in item.dimensions]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise RequestValidationError(f"The dimension {', '.join(repeated)} is subset more than once.")
    return NetcdfRequest(
        granule_id=granule.id,
        granule_name=granule.name or granule.id,
        source=source,
        media_type=output_format(item.output.format),
        variables=tuple(item.variables),
        bbox=optional_bbox(item),
        temporal=optional_time(item),
        dimensions=tuple(
            DimensionRange(
                d.name, d.min if d.HasField("min") else None, d.max if d.HasField("max") else None
            )
            for d in item.dimensions
        ),
        grid=grid_spec_of(item.output),
    )


def netcdf_task(request: NetcdfRequest, budget: Budget) -> FileOutput:
    state = current()
    access: DataAccess = state.resources
    return process(request, access, state.scratch, budget)


class NetcdfTransformer(FileTransformer):
    """Transform gridded NetCDF: subset, regrid, and write NetCDF4, Zarr or a COG."""

    family = "netcdf"
    operations = OPERATIONS
    output_formats = tuple(EXTENSIONS)

    light_first = False  # the output's size is known only once the file is open: every item is heavy

    def prepare(self, item: transformer_pb2.WorkItem) -> Callable[[Budget], FileOutput]:
        return functools.partial(netcdf_task, netcdf_request(item, self.source(item.granule, item.access_token)))


async def serve(settings: TransformerSettings) -> TransformerServer:
    """Start the netcdf transformer on settings.host:settings.port (0 picks a free port)."""
    return await serve_transformer(settings, NetcdfTransformer)
