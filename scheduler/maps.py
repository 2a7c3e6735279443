"""WMS maps: which granules to draw for an extent and time, and in what order."""

from __future__ import annotations

import time
from functools import lru_cache

from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from geomesh.errors import RequestValidationError
from geomesh.model import BBox, TimeRange, optional_bbox, optional_time
from geomesh.v1 import request_pb2, transformer_pb2, types_pb2

# A map draws at most this many granules, the newest ones: older ones lie underneath anyway,
# and a map must come back in milliseconds.
MAX_MAP_GRANULES = 16
PLAN_TTL_SECONDS = 30.0
# Collections with at most this many granules are listed once (per PLAN_TTL_SECONDS) for maps.
MAP_CATALOG_LIMIT = 5000
TOO_MANY = object()


# WMS names that PROJ spells differently.
_WMS_CRS = {"CRS:84": "OGC:CRS84", "CRS:83": "OGC:CRS83", "CRS:27": "OGC:CRS27"}


def proj_crs(crs: str) -> str:
    """The CRS as PROJ reads it (the transformer receives this spelling)."""
    return _WMS_CRS.get(crs.strip().upper(), crs.strip())


@lru_cache(maxsize=64)
def _to_wgs84(crs: str) -> Transformer:
    try:
        return Transformer.from_crs(CRS.from_user_input(crs), CRS.from_epsg(4326), always_xy=True)
    except CRSError as error:
        raise RequestValidationError(f"The map's CRS {crs} could not be read: {error}") from None


def footprint(render: transformer_pb2.RenderRequest) -> BBox:
    """The map's extent in WGS84 degrees, clipped to the globe, for the granule search."""
    if not (render.min_x < render.max_x and render.min_y < render.max_y):
        raise RequestValidationError("The map's extent must have min_x < max_x and min_y < max_y")
    west, south, east, north = _to_wgs84(proj_crs(render.crs)).transform_bounds(
        render.min_x, render.min_y, render.max_x, render.max_y, densify_pts=8
    )
    return BBox(max(west, -180.0), max(south, -90.0), min(east, 180.0), min(north, 90.0))


def pixel_cell(render: transformer_pb2.RenderRequest, i: int, j: int) -> transformer_pb2.RenderRequest:
    """The extent of one map pixel (column i, row j from the top left), to search the granules under it."""
    step_x = (render.max_x - render.min_x) / render.width
    step_y = (render.max_y - render.min_y) / render.height
    max_y = render.max_y - j * step_y
    return transformer_pb2.RenderRequest(
        crs=render.crs, min_x=render.min_x + i * step_x, max_x=render.min_x + (i + 1) * step_x, min_y=max_y - step_y, max_y=max_y
    )


def covering(granules: list[types_pb2.Granule], search: request_pb2.DataRequest) -> list[types_pb2.Granule]:
    """The granules a search would find: ids, extent and time, as the catalog matches them."""
    wanted_ids = set(search.granule_ids)
    bbox = optional_bbox(search)
    temporal = optional_time(search)
    return [
        granule
        for granule in granules
        if (not wanted_ids or granule.id in wanted_ids)
        and (bbox is None or not granule.HasField("bbox") or bbox.intersects(BBox.from_proto(granule.bbox)))
        and (temporal is None or not granule.HasField("temporal") or temporal.intersects(TimeRange.from_proto(granule.temporal)))
    ]


def drawing_order(granules: list[types_pb2.Granule]) -> list[types_pb2.Granule]:
    """The newest MAX_MAP_GRANULES, oldest first, so the newest is painted last, on top."""
    newest = sorted(granules, key=lambda g: (g.temporal.start.seconds, g.temporal.start.nanos), reverse=True)
    return list(reversed(newest[:MAX_MAP_GRANULES]))


class TtlCache:
    """A few recent answers, each kept for a while (the plan of a map layer changes rarely)."""

    def __init__(self, ttl: float, size: int = 256) -> None:
        self.ttl, self.size = ttl, size
        self._entries: dict[object, tuple[float, object]] = {}

    def get(self, key: object) -> object | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: object, value: object) -> None:
        if len(self._entries) >= self.size:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (time.monotonic() + self.ttl, value)
