"""The stored values under one map pixel (WMS GetFeatureInfo), without gRPC.

Blocking (GDAL): callers run it on worker threads. The pixel is located as a map draws it: its
centre, projected into each granule's CRS, picks the granule's pixel (nearest neighbour), so the
values reported are those of the pixel the map shows there. A granule whose pixel there is masked
(nodata, or alpha 0) or NaN has no data at the point and is skipped, as the map leaves it unpainted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rasterio.io import DatasetReader
from rasterio.windows import Window

from geomesh.errors import TransformError
from transformers.gdal.datasets import DatasetPool
from transformers.gdal.grid import _transformer, map_crs
from transformers.gdal.render import MapGranule, _bands

_WGS84 = "EPSG:4326"


@dataclass(frozen=True, slots=True)
class SampleSpec:
    """One pixel of a map: the grid as in RenderSpec, the pixel's column i and row j (0 at top left)."""

    granules: tuple[MapGranule, ...]  # newest first
    variables: tuple[str, ...]  # empty: the bands a map would draw
    crs: str
    bounds: tuple[float, float, float, float]  # min_x, min_y, max_x, max_y in crs units, x = east
    width: int
    height: int
    i: int
    j: int
    feature_count: int

    def centre(self) -> tuple[float, float]:
        min_x, min_y, max_x, max_y = self.bounds
        return (min_x + (self.i + 0.5) * (max_x - min_x) / self.width,
                max_y - (self.j + 0.5) * (max_y - min_y) / self.height)


@dataclass(frozen=True, slots=True)
class Value:
    variable: str
    value: float
    data_type: str


@dataclass(frozen=True, slots=True)
class GranuleValues:
    granule_id: str
    values: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Sampled:
    lon: float
    lat: float
    granules: tuple[GranuleValues, ...]  # newest first


def sample(spec: SampleSpec, pool: DatasetPool) -> Sampled:
    """Values of the newest spec.feature_count granules that have data under the pixel's centre."""
    wkt = map_crs(spec.crs)
    x, y = spec.centre()
    lon, lat = _transformer(wkt, _WGS84).transform(x, y)
    found: list[GranuleValues] = []
    for granule in spec.granules:
        if len(found) >= spec.feature_count:
            break
        with pool.open(granule.source) as src:
            values = _read_point(src, granule.id, spec.variables, wkt, x, y)
        if values is not None:
            found.append(GranuleValues(granule.id, values))
    return Sampled(lon, lat, tuple(found))


def _read_point(
    src: DatasetReader, granule_id: str, variables: tuple[str, ...], wkt: str, x: float, y: float
) -> tuple[Value, ...] | None:
    """The bands' values at (x, y) in the map's CRS; None off the granule or where it has no data."""
    if src.crs is None:
        raise TransformError(f"Granule {granule_id} has no CRS, so no map point can be found in it.")
    bands = _bands(src, variables, granule_id)
    source_x, source_y = _transformer(wkt, src.crs.to_wkt()).transform(x, y)
    if not (math.isfinite(source_x) and math.isfinite(source_y)):
        return None
    col, row = ~src.transform * (source_x, source_y)
    col, row = math.floor(col), math.floor(row)
    if not (0 <= col < src.width and 0 <= row < src.height):
        return None
    window = Window(col, row, 1, 1)
    if src.read_masks(bands[0], window=window)[0, 0] == 0:
        return None
    pixel = src.read(bands, window=window)[:, 0, 0]
    if pixel.dtype.kind == "f" and not all(math.isfinite(v) for v in pixel.tolist()):
        return None
    names = variables or tuple(src.descriptions[band - 1] or f"band_{band}" for band in bands)
    return tuple(
        Value(name, float(value), src.dtypes[band - 1]) for name, value, band in zip(names, pixel.tolist(), bands, strict=True)
    )
