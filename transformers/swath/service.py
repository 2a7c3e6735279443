"""The swath transformer's gRPC service: regrid one Level 2 swath granule per work item.

Streaming, threads and the server are transformers.serving's; this module checks a WorkItem on
the event loop (bad requests fail before a thread is taken) and turns it into a RegridRequest.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from geomesh.errors import UnsupportedOperationError
from geomesh.settings import TransformerSettings
from geomesh.v1 import transformer_pb2
from transformers.grids import grid_spec_of
from transformers.serving import (
    Budget,
    FileOutput,
    FileTransformer,
    TransformerServer,
    chosen_format,
    serve_transformer,
)
from transformers.sources import DataAccess, Source
from transformers.swath.process import EXTENSIONS, RegridRequest, regrid_granule
from transformers.workers import current

OPERATIONS = ("reprojection",)


def regrid_request(item: transformer_pb2.WorkItem, source: Source) -> RegridRequest:
    """The WorkItem in domain terms; what a swath projector does not do is refused here."""
    _refuse_unsupported(item)
    granule = item.granule
    return RegridRequest(
        granule_id=granule.id,
        granule_name=granule.name or granule.id,
        source=source,
        media_type=output_format(item.output.format),
        grid=grid_spec_of(item.output),
    )


def output_format(media_type: str) -> str:
    """The supported media type asked for (parameters and case ignored), or UnsupportedOperationError."""
    return chosen_format(media_type, "swath", list(EXTENSIONS))


def _refuse_unsupported(item: transformer_pb2.WorkItem) -> None:
    asked: list[str] = []
    if item.variables:
        asked.append("variable subsets")
    if item.HasField("bbox"):
        asked.append("bounding-box subsets")
    if item.dimensions:
        asked.append("dimension subsets")
    if item.HasField("shape") and (item.shape.content or item.shape.file_name):
        asked.append("shape subsets")
    if asked:
        raise UnsupportedOperationError(
            "The swath transformer does not support " + ", ".join(asked) + "; it regrids whole swaths "
            "(outputCrs, scaleExtent, scaleSize, width, height, interpolation)."
        )


def swath_task(request: RegridRequest, budget: Budget) -> FileOutput:
    state = current()
    access: DataAccess = state.resources
    return regrid_granule(request, access, state.scratch, budget)


class SwathTransformer(FileTransformer):
    """Regrids swaths (2-D lat/lon) to NetCDF-4 or GeoTIFF; keeps nothing open between requests."""

    family = "swath"
    operations = OPERATIONS
    output_formats = tuple(EXTENSIONS)

    light_first = False  # a swath's grid is known only once it is read: every item is heavy

    def prepare(self, item: transformer_pb2.WorkItem) -> Callable[[Budget], FileOutput]:
        return functools.partial(swath_task, regrid_request(item, self.source(item.granule, item.access_token)))


async def serve(settings: TransformerSettings) -> TransformerServer:
    """Start the swath transformer on settings.host:settings.port (0 picks a free port)."""
    return await serve_transformer(settings, SwathTransformer)
