"""What every transformer family shares about output grids: the request's grid parameters
(outputCrs, interpolation, scaleExtent, scaleSize, width, height), checked the same way everywhere,
and the output grid sized the way gdalwarp sizes -te, -tr and -ts, so that one request gives the
same grid from the gdal, netcdf and swath families.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyproj
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import CRSError, RasterioError
from rasterio.warp import calculate_default_transform, transform_bounds

from geomesh.errors import RequestValidationError
from geomesh.v1 import request_pb2

# gdalwarp's -r names (Harmony passes them through); "nearest" is accepted for near.
INTERPOLATIONS: dict[str, Resampling] = {
    "near": Resampling.nearest,
    "nearest": Resampling.nearest,
    "bilinear": Resampling.bilinear,
    "cubic": Resampling.cubic,
    "cubicspline": Resampling.cubic_spline,
    "lanczos": Resampling.lanczos,
    "average": Resampling.average,
    "mode": Resampling.mode,
    "min": Resampling.min,
    "max": Resampling.max,
    "med": Resampling.med,
    "q1": Resampling.q1,
    "q3": Resampling.q3,
}
# Output size cap: a side, and the whole grid (16384 x 16384 pixels).
MAX_SIDE = 32768
MAX_PIXELS = 16384 * 16384
CRS_MESSAGE = 'query parameter "crs/outputCrs" could not be parsed.  Try an EPSG code or Proj4 string.'
_WGS84 = pyproj.CRS.from_epsg(4326)
_WGS84_RASTERIO = CRS.from_epsg(4326)
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GridSpec:
    """What the user asked of the output grid; every field optional."""

    crs: str | None = None
    interpolation: str | None = None
    extent: tuple[float, float, float, float] | None = None  # xmin, ymin, xmax, ymax, output CRS units
    size: tuple[float, float] | None = None  # pixel size x, y, output CRS units
    width: int | None = None
    height: int | None = None

    @property
    def regrids(self) -> bool:
        return bool(self.extent or self.size or self.width or self.height)

    @property
    def resampling(self) -> Resampling:
        return INTERPOLATIONS[self.interpolation or "near"]


def grid_spec(
    crs: str | None,
    interpolation: str | None,
    extent: Sequence[float],
    size: Sequence[float],
    width: int | None,
    height: int | None,
) -> GridSpec:
    """Checked: the edge validates the same, but a WorkItem may come from elsewhere."""
    name = (interpolation or "").strip().lower() or None
    if name is not None and name not in INTERPOLATIONS:
        raise RequestValidationError(
            f'query parameter "interpolation" value "{interpolation}" is not supported; use one of: '
            + ", ".join(INTERPOLATIONS)
        )
    if extent and not (len(extent) == 4 and extent[0] < extent[2] and extent[1] < extent[3]):
        raise RequestValidationError(
            'query parameter "scaleExtent" must be xmin,ymin,xmax,ymax with xmin less than xmax and ymin less than ymax'
        )
    if size and not (len(size) == 2 and all(value > 0 for value in size)):
        raise RequestValidationError('query parameter "scaleSize" must be x,y with both sizes greater than 0')
    if size and (width or height):
        raise RequestValidationError(
            'query parameters "scaleSize" and "width"/"height" cannot both be given: scaleSize sets the pixel size, '
            "width and height set the pixel count"
        )
    for label, count in (("width", width), ("height", height)):
        if count is not None and not 1 <= count <= MAX_SIDE:
            raise RequestValidationError(f'query parameter "{label}" should be between 1 and {MAX_SIDE}')
    if crs:
        target_crs(crs)  # RequestValidationError when unreadable
    return GridSpec(
        crs=crs or None,
        interpolation=name,
        extent=(extent[0], extent[1], extent[2], extent[3]) if extent else None,
        size=(size[0], size[1]) if size else None,
        width=width,
        height=height,
    )


def grid_spec_of(output: request_pb2.OutputOptions) -> GridSpec:
    """A work item's output options as a checked GridSpec."""
    return grid_spec(
        crs=output.crs.strip() or None,
        interpolation=output.interpolation or None,
        extent=output.scale_extent,
        size=output.scale_size,
        width=output.width if output.HasField("width") else None,
        height=output.height if output.HasField("height") else None,
    )


@lru_cache(maxsize=64)
def target_crs(text: str) -> CRS:
    """The CRS asked for; its EPSG form when GDAL recognizes one that projects identically.

    So a proj4 string for EPSG:6933 (towgs84 zeros, unnamed datum) gives the same GeoTIFF CRS as
    "EPSG:6933" itself, and readers see a registered code.
    """
    try:
        crs = CRS.from_user_input(text)
    except (CRSError, ValueError):  # rasterio raises a bare ValueError for some, e.g. "EPSG:nope"
        raise RequestValidationError(CRS_MESSAGE) from None
    if not (crs.is_geographic or crs.is_projected):  # GDAL cannot warp to a geocentric or vertical CRS
        raise RequestValidationError(f"outputCrs {text!r} is neither geographic nor projected: {CRS_MESSAGE}")
    code = crs.to_epsg()
    if code is None:
        return crs
    known = CRS.from_epsg(code)
    return known if known == crs or _projects_alike(crs.to_wkt(), known.to_wkt()) else crs


def _projects_alike(wkt: str, other_wkt: str) -> bool:
    """Whether both place a lattice of lon/lat points at the same coordinates (within 1 mm)."""
    a, b = pyproj.CRS.from_wkt(wkt), pyproj.CRS.from_wkt(other_wkt)
    units = ([axis.unit_name for axis in a.axis_info[:1]], [axis.unit_name for axis in b.axis_info[:1]])
    if a.is_geographic != b.is_geographic or units[0] != units[1]:
        return False
    lons, lats = np.meshgrid(np.linspace(-179.5, 179.5, 19), np.linspace(-89.5, 89.5, 13))
    try:
        xa, ya = pyproj.Transformer.from_crs(_WGS84, a, always_xy=True).transform(lons, lats)
        xb, yb = pyproj.Transformer.from_crs(_WGS84, b, always_xy=True).transform(lons, lats)
    except pyproj.exceptions.ProjError:  # no way to compare: keep what the user gave
        return False
    tolerance = 1e-8 if a.is_geographic else 1e-3
    return bool(np.allclose(xa, xb, atol=tolerance, equal_nan=True) and np.allclose(ya, yb, atol=tolerance, equal_nan=True))


@dataclass(frozen=True, slots=True)
class Grid:
    crs: CRS
    transform: Affine
    width: int
    height: int


def output_grid(
    src_crs: CRS,
    bounds: tuple[float, float, float, float],
    shape: tuple[int, int],
    crs: CRS,
    spec: GridSpec,
    granule_id: str = "",
) -> Grid:
    """The output grid of a source area (bounds in src_crs, shape = width, height in pixels):
    GDAL's suggested grid, then scaleExtent (-te), scaleSize (-tr) or width/height (-ts).

    A CRS that covers only part of the Earth (an orthographic view, a UTM zone) cannot place an
    area outside it: RequestValidationError naming the area, rather than GDAL's error.
    """
    left, bottom, right, top = bounds
    try:
        default, width, height = calculate_default_transform(
            src_crs, crs, shape[0], shape[1], left=left, bottom=bottom, right=right, top=top
        )
    except (CPLE_BaseError, RasterioError) as error:
        log.warning("granule %s: no output grid in %s for %s: %s", granule_id, spec.crs or crs.to_string(), bounds, error)
        raise _unprojectable(src_crs, bounds, spec.crs or crs.to_string(), granule_id) from None
    if not all(math.isfinite(value) for value in (*default[:6], width, height)):
        raise _unprojectable(src_crs, bounds, spec.crs or crs.to_string(), granule_id)
    xres, yres = default.a, -default.e
    xmin, ymax = default.c, default.f
    return fit_grid(crs, (xmin, ymax - height * yres, xmin + width * xres, ymax), (xres, yres), spec)


def _unprojectable(
    src_crs: CRS, bounds: tuple[float, float, float, float], crs: str, granule_id: str
) -> RequestValidationError:
    area = f"The requested area of granule {granule_id}" if granule_id else "The requested area"
    try:
        west, south, east, north = transform_bounds(src_crs, _WGS84_RASTERIO, *bounds, densify_pts=21)
        extent = f" ({west:g},{south:g},{east:g},{north:g} as west,south,east,north)"
    except (CPLE_BaseError, RasterioError):
        extent = ""
    return RequestValidationError(
        f"{area}{extent} cannot be projected to the outputCrs {crs}: that CRS covers only "
        "part of the Earth and this area lies outside it. Subset to an area the CRS covers (e.g. "
        "subset=lat(south:north)&subset=lon(west:east)), or ask for a CRS that covers the whole area."
    )


def fit_grid(
    crs: CRS, extent: tuple[float, float, float, float], resolution: tuple[float, float], spec: GridSpec
) -> Grid:
    """The grid over `extent` (xmin, ymin, xmax, ymax) at `resolution` (x, y) unless the spec says
    otherwise; one of width/height alone keeps the pixels' aspect. Too large: RequestValidationError."""
    xmin, ymin, xmax, ymax = spec.extent or extent
    xres, yres = resolution
    aspect = yres / xres if xres > 0 and yres > 0 else 1.0
    if spec.size:
        xres, yres = spec.size
        width, height = _count(xmax - xmin, xres), _count(ymax - ymin, yres)
    else:
        if spec.width and spec.height:
            width, height = spec.width, spec.height
        elif spec.width:
            width, height = spec.width, _count(ymax - ymin, (xmax - xmin) / spec.width * aspect)
        elif spec.height:
            width, height = _count(xmax - xmin, (ymax - ymin) / spec.height / aspect), spec.height
        else:
            width, height = _count(xmax - xmin, xres), _count(ymax - ymin, yres)
        # A pixel count fits the extent exactly, as gdalwarp -ts and -te do.
        xres, yres = (xmax - xmin) / width, (ymax - ymin) / height
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise RequestValidationError(
            f"The output would be {width} x {height} pixels, above the limit of {MAX_SIDE} pixels a side and "
            f"{MAX_PIXELS} pixels in all: ask for a smaller width/height, a coarser scaleSize or a smaller scaleExtent"
        )
    return Grid(crs, Affine(xres, 0.0, xmin, 0.0, -yres, ymax), width, height)


def edges_on_earth(crs: CRS, bounds: tuple[float, float, float, float], points: int = 21) -> bool:
    """Whether every point along the edges of `bounds` (xmin, ymin, xmax, ymax in `crs`) is a place
    on the Earth. An orthographic grid's corners are not, and GDAL's WGS84 bounds of such a grid
    hold infinities, swapped edges or only part of the area."""
    left, bottom, right, top = bounds
    along = np.linspace(0.0, 1.0, points)
    across, down = left + (right - left) * along, top - (top - bottom) * along
    xs = np.concatenate([across, np.full(points, right), across[::-1], np.full(points, left)])
    ys = np.concatenate([np.full(points, top), down, np.full(points, bottom), down[::-1]])
    lons, lats = _to_wgs84(crs.to_wkt()).transform(xs, ys, errcheck=False)
    return bool(np.isfinite(lons).all() and np.isfinite(lats).all())


@lru_cache(maxsize=64)
def _to_wgs84(wkt: str) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(pyproj.CRS.from_wkt(wkt), _WGS84, always_xy=True)


def _count(span: float, resolution: float) -> int:
    """Pixels of `resolution` across `span`, rounded, at least one; huge values are left to the cap."""
    count = span / resolution
    return max(1, round(count)) if math.isfinite(count) else MAX_SIDE + 1
