"""Map rendering for WMS GetMap, without gRPC: granules painted in order onto one coloured image.

Blocking (GDAL, numpy): callers run it on worker threads. Resampling is nearest neighbour, done
here with numpy rather than GDAL's warper: each granule is read once, only the window the map
covers (from an overview when the map is coarser than one), and its pixels are picked by index.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from rasterio.enums import ColorInterp
from rasterio.io import DatasetReader
from rasterio.transform import Affine
from rasterio.windows import Window

from geomesh.errors import TransformError
from geomesh.model import BBox
from transformers.gdal.datasets import DatasetPool, _version
from transformers.gdal.encode import EXTENSIONS, TRANSPARENT_FORMATS, Canvas, encode
from transformers.gdal.grid import Coordinates, MapGrid, map_crs
from transformers.gdal.subset import _band_indexes
from transformers.sources import Source

# Colour ramp for one variable: viridis (perceptually uniform, readable by colour-blind people),
# from nine of its colours, low values first.
_RAMP_STOPS = ("440154", "472d7b", "3b528b", "2c728e", "21918c", "28ae80", "5ec962", "addc30", "fde725")
# A band's value range is measured on a read of at most this many pixels a side.
_RANGE_SAMPLE = 1024


@dataclass(frozen=True, slots=True)
class MapGranule:
    id: str
    source: Source
    # WGS84 extent from the catalog, if known: granules off the map are skipped without opening them.
    bbox: BBox | None = None


@dataclass(frozen=True, slots=True)
class RenderSpec:
    """A map to draw, in domain terms (the service converts the RenderRequest into this)."""

    granules: tuple[MapGranule, ...]  # drawn in order: the last one ends up on top
    # One: a colour ramp; three: red, green, blue; none: the source's own colour bands if it has
    # them, else its first band on a ramp.
    variables: tuple[str, ...]
    crs: str  # anything pyproj reads, or CRS:84
    bounds: tuple[float, float, float, float]  # min_x, min_y, max_x, max_y in crs units, x = east
    width: int
    height: int
    media_type: str
    transparent: bool = False
    background: tuple[int, int, int] = (255, 255, 255)


@dataclass(frozen=True, slots=True)
class Rendered:
    content: bytes
    media_type: str
    file_name: str
    bbox: BBox  # the map's extent in WGS84


def render(spec: RenderSpec, pool: DatasetPool) -> Rendered:
    """Paint every granule that covers the map, in order, and encode the image."""
    grid = MapGrid(map_crs(spec.crs), spec.bounds, spec.width, spec.height)
    alpha = spec.transparent and spec.media_type in TRANSPARENT_FORMATS
    canvas = Canvas(spec.width, spec.height, (*spec.background, 0) if alpha else spec.background)
    footprint = grid.wgs84_bounds()
    for granule in spec.granules:
        if granule.bbox is not None and not _may_overlap(granule.bbox, footprint):
            continue
        with pool.open(granule.source) as src:
            _paint(canvas, src, granule.id, spec.variables, grid)
    content = encode(canvas, spec.media_type, grid.crs, grid.transform)
    return Rendered(content, spec.media_type, "map" + EXTENSIONS[spec.media_type], footprint)


def _may_overlap(granule: BBox, footprint: BBox) -> bool:
    """False only when the WGS84 boxes surely miss each other (boxes across the antimeridian are kept)."""
    if granule.west > granule.east or footprint.west > footprint.east:
        return True
    return granule.intersects(footprint)


@dataclass(frozen=True, slots=True)
class _Placement:
    """Where a granule lands on the map and which of its pixels each map pixel shows."""

    rows: slice  # the map's rows and columns the granule touches
    cols: slice
    inside: np.ndarray  # (rows, cols): map pixels whose centre falls on the granule
    window: Window  # the source pixels read, at out_shape (an overview's resolution, or full)
    out_shape: tuple[int, int]
    flat_index: np.ndarray  # per map pixel, the read pixel's index in the flattened read array


def _paint(
    canvas: Canvas,
    src: DatasetReader,
    granule_id: str,
    variables: tuple[str, ...],
    grid: MapGrid,
) -> None:
    if src.crs is None:
        raise TransformError(f"Granule {granule_id} has no CRS, so it cannot be drawn on a map.")
    bands = _bands(src, variables, granule_id)
    placement = _placement(grid, src.crs.to_wkt(), src.transform, src.width, src.height, tuple(src.overviews(bands[0])))
    if placement is None:
        return
    values = _pick(src.read(bands, window=placement.window, out_shape=(len(bands), *placement.out_shape)), placement)
    mask = _pick(src.read_masks(bands[0], window=placement.window, out_shape=placement.out_shape), placement)
    valid = placement.inside & (mask > 0)
    if values.dtype.kind == "f":
        valid &= np.isfinite(values).all(axis=0)
    target = canvas.pixels[placement.rows, placement.cols]
    if len(bands) == 1:
        low, high = _value_range(src, bands[0])
        plane = values[0]
        if plane.dtype == np.uint8:  # colour the 256 possible values once, then look them up
            colours = _ramp()[_to_bytes(np.arange(256), low, high)][plane]
        else:
            colours = _ramp()[_to_bytes(plane, low, high)]
        np.copyto(target[..., :3], colours, where=valid[..., None])
    else:
        for channel, (plane, band) in enumerate(zip(values, bands, strict=True)):
            if plane.dtype != np.uint8:  # colour from other types: stretched over the band's range
                plane = _to_bytes(plane, *_value_range(src, band))
            np.copyto(target[..., channel], plane, where=valid)
    if canvas.has_alpha:
        target[..., 3][valid] = 255


def _bands(src: DatasetReader, variables: tuple[str, ...], granule_id: str) -> list[int]:
    """Band numbers to draw: the variables asked for, or the source's own colours, or its first band."""
    if variables:
        # One at a time, as a variable may be repeated (the same band as red, green and blue).
        return [_band_indexes(src, (variable,), granule_id)[0] for variable in variables]
    colours = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    if all(colour in src.colorinterp for colour in colours):
        return [src.colorinterp.index(colour) + 1 for colour in colours]
    return [1]


@lru_cache(maxsize=32)
def _source_coordinates(grid: MapGrid, wkt: str) -> Coordinates:
    """The map's pixel centres in a source CRS: shared by the granules of a map, and by repeated maps."""
    return grid.source_coordinates(wkt)


@lru_cache(maxsize=64)
def _placement(
    grid: MapGrid, wkt: str, transform: Affine, width: int, height: int, overviews: tuple[int, ...]
) -> _Placement | None:
    """The map pixels a granule covers and the source window they need; None if it covers none.

    Remembered: maps and tiles are asked for again and again, and working this out costs about
    as much as reading the pixels. Keyed on the source's grid, so a rewritten file is not mixed up.
    """
    inverse = ~transform
    x, y = _source_coordinates(grid, wkt)
    with np.errstate(invalid="ignore"):
        # Kept as a row or a column vector when the coordinates are (north-up sources need no mixing).
        col = inverse.a * x + inverse.c if inverse.b == 0 else inverse.a * x + inverse.b * y + inverse.c
        row = inverse.e * y + inverse.f if inverse.d == 0 else inverse.d * x + inverse.e * y + inverse.f
        inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    rows = np.flatnonzero(inside.any(axis=1))
    cols = np.flatnonzero(inside.any(axis=0))
    if rows.size == 0:
        return None
    map_rows, map_cols = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    inside = inside[map_rows, map_cols]
    col, row = _crop(col, map_rows, map_cols), _crop(row, map_rows, map_cols)
    window, out_shape = _read_plan(width, height, overviews, _span(col, inside), _span(row, inside), inside.shape)
    with np.errstate(invalid="ignore"):
        col_index = ((col - window.col_off) * (out_shape[1] / window.width)).astype(np.intp)
        row_index = ((row - window.row_off) * (out_shape[0] / window.height)).astype(np.intp)
    # Indexes of pixels outside the granule are clipped here and masked out by `inside` later.
    np.clip(col_index, 0, out_shape[1] - 1, out=col_index)
    np.clip(row_index, 0, out_shape[0] - 1, out=row_index)
    flat_index = np.broadcast_to(row_index * out_shape[1] + col_index, inside.shape).ravel()
    inside.flags.writeable = False  # shared through the cache
    return _Placement(map_rows, map_cols, inside, window, out_shape, flat_index)


def _crop(values: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    """values[rows, cols] for an array that may be a row or a column vector."""
    return values[rows if values.shape[0] > 1 else slice(None), cols if values.shape[1] > 1 else slice(None)]


def _span(position: np.ndarray, inside: np.ndarray) -> tuple[int, int]:
    """First and last source pixel used along one axis.

    A vector's crop may hold entries off the granule: projected coordinates can wrap (a BBOX far off
    the Earth in EPSG:3857 gives columns in and out of the granule by turns), and one wild entry made
    the window billions of pixels wide, read at full size. So only the entries some map pixel uses count.
    """
    rows, cols = inside.shape
    if position.shape == (1, cols) and rows > 1:  # a row vector: one entry per map column
        used = position[0][inside.any(axis=0)]
    elif position.shape == (rows, 1) and cols > 1:  # a column vector: one per map row
        used = position[:, 0][inside.any(axis=1)]
    else:
        used = np.broadcast_to(position, inside.shape)[inside]
    return int(math.floor(used.min())), int(math.floor(used.max()))


def _read_plan(
    width: int, height: int, overviews: tuple[int, ...], cols: tuple[int, int], rows: tuple[int, int], map_shape: tuple[int, int]
) -> tuple[Window, tuple[int, int]]:
    """The window to read and its shape: full resolution, or the coarsest overview still at least
    as fine as the map, in whole overview pixels (GDAL then copies them rather than resampling)."""
    (first_col, last_col), (first_row, last_row) = cols, rows
    needed = min((last_col - first_col + 1) / map_shape[1], (last_row - first_row + 1) / map_shape[0])
    factor = max((f for f in overviews if f <= needed), default=1)
    if factor == 1:
        window = Window(first_col, first_row, last_col - first_col + 1, last_row - first_row + 1)
        return window, (int(window.height), int(window.width))
    first_col, first_row = first_col // factor, first_row // factor
    end_col = min(math.ceil(width / factor), last_col // factor + 1)
    end_row = min(math.ceil(height / factor), last_row // factor + 1)
    window = Window(
        first_col * factor,
        first_row * factor,
        min(width, end_col * factor) - first_col * factor,
        min(height, end_row * factor) - first_row * factor,
    )
    return window, (end_row - first_row, end_col - first_col)


def _pick(data: np.ndarray, placement: _Placement) -> np.ndarray:
    """Nearest neighbours: the read pixels under each map pixel, in the map's (rows, cols) shape.

    One take on flat indexes: about 8x faster than numpy's 2-D fancy indexing, and faster than
    two 1-D takes even when rows and columns are independent.
    """
    flat = data.reshape(*data.shape[:-2], -1).take(placement.flat_index, axis=-1)
    return flat.reshape(*data.shape[:-2], *placement.inside.shape)


def _to_bytes(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Values scaled linearly from low..high to 0..255 (out-of-range values clipped, NaN to 0)."""
    scale = 255.0 / (high - low) if high > low else 0.0
    scaled = (values.astype(np.float32) - np.float32(low)) * np.float32(scale)
    return np.nan_to_num(np.clip(scaled, 0, 255), copy=False).astype(np.uint8)


@lru_cache(maxsize=1)
def _ramp() -> np.ndarray:
    """(256, 3) uint8 colours, interpolated linearly between the stops."""
    stops = np.array([[int(hex_[i : i + 2], 16) for i in (0, 2, 4)] for hex_ in _RAMP_STOPS], dtype=np.float64)
    positions = np.linspace(0, 255, len(stops))
    levels = np.arange(256)
    channels = [np.interp(levels, positions, stops[:, channel]) for channel in range(3)]
    return np.stack(channels, axis=1).round().astype(np.uint8)


_ranges: dict[tuple[str, object, int], tuple[float, float]] = {}
_ranges_lock = threading.Lock()
_RANGES_KEPT = 4096


def _value_range(src: DatasetReader, band: int) -> tuple[float, float]:
    """The band's valid values' range: from its statistics metadata, else measured once per file version.

    One range per band, not per map, so that neighbouring tiles colour the same value the same way.
    """
    tags = src.tags(band)
    if "STATISTICS_MINIMUM" in tags and "STATISTICS_MAXIMUM" in tags:
        return float(tags["STATISTICS_MINIMUM"]), float(tags["STATISTICS_MAXIMUM"])
    key = (src.name, _version(src.name), band)
    with _ranges_lock:
        known = _ranges.get(key)
    if known is None:
        known = _measure_range(src, band)  # two threads may both measure: harmless
        with _ranges_lock:
            if len(_ranges) >= _RANGES_KEPT:
                del _ranges[next(iter(_ranges))]
            _ranges[key] = known
    return known


def _measure_range(src: DatasetReader, band: int) -> tuple[float, float]:
    scale = min(1.0, _RANGE_SAMPLE / max(src.width, src.height))
    shape = (max(1, round(src.height * scale)), max(1, round(src.width * scale)))
    values = src.read(band, out_shape=shape)
    valid = src.read_masks(band, out_shape=shape) > 0
    if values.dtype.kind == "f":
        valid &= np.isfinite(values)
    if not valid.any():
        return 0.0, 1.0
    return float(values[valid].min()), float(values[valid].max())
