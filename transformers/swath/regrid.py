"""Regrid a swath onto a grid: the grid from outputCrs/scaleExtent/scaleSize/width/height, the warp by GDAL.

A swath has no grid of its own, so the output CRS defaults to EPSG:4326, its extent to the
swath's projected footprint and its pixel size to the swath's own pixel spacing. The warp uses
GDAL's geolocation-array transformer (rasterio's `src_geoloc_array`). Blocking: worker threads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyproj
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject

from geomesh.errors import RequestValidationError
from geomesh.model import BBox
from transformers.grids import GridSpec, fit_grid, target_crs
from transformers.swath.source import Swath

WGS84 = CRS.from_epsg(4326)
# The warp holds every variable's output in memory at once (as floats): output pixels x variables
# are capped at 2^26 (256 MB of float32), below the gdal transformer's per-grid cap, which streams.
MAX_CELLS = 1 << 26


@dataclass(frozen=True, slots=True)
class Grid:
    crs: CRS
    transform: Affine
    width: int
    height: int
    # WGS84 extent of the swath's points that fall on the grid (None: none does); known once the
    # swath is projected to size the grid, so it is kept rather than projected again.
    footprint: BBox | None = None

    @property
    def xs(self) -> np.ndarray:
        """Pixel centres along x, in CRS units."""
        return self.transform.c + (np.arange(self.width) + 0.5) * self.transform.a

    @property
    def ys(self) -> np.ndarray:
        """Pixel centres along y (north first), in CRS units."""
        return self.transform.f + (np.arange(self.height) + 0.5) * self.transform.e


def output_crs(spec: GridSpec) -> CRS:
    return target_crs(spec.crs) if spec.crs else WGS84


def swath_grid(swath: Swath, spec: GridSpec) -> Grid:
    """The output grid: extent and square pixels from the swath unless scaleExtent, scaleSize or width/height say."""
    crs = output_crs(spec)
    xs, ys = _projected(swath, crs)
    finite = np.isfinite(xs) & np.isfinite(ys)
    if not finite.any():
        raise RequestValidationError(f"The swath cannot be placed in the requested CRS {spec.crs}: no point projects.")
    # The swath's own pixel spacing, where nothing the user gave fixes the extent or the pixel size.
    spacing = _spacing(xs, ys) if not spec.extent or not (spec.size or spec.width or spec.height) else 0.0
    half = spacing / 2
    extent = (
        float(xs[finite].min()) - half, float(ys[finite].min()) - half,
        float(xs[finite].max()) + half, float(ys[finite].max()) + half,
    )
    fitted = fit_grid(crs, extent, (spacing, spacing), spec)
    width, height, transform = fitted.width, fitted.height, fitted.transform
    xmin, ymax, xres, yres = transform.c, transform.f, transform.a, -transform.e
    if width * height * len(swath.variables) > MAX_CELLS:
        raise RequestValidationError(
            f"The output would be {width} x {height} pixels for each of {len(swath.variables)} variables, above the "
            f"limit of {MAX_CELLS} pixels in all for a regridded swath: ask for a smaller width/height, a coarser "
            "scaleSize or a smaller scaleExtent"
        )
    inside = finite & (xs >= xmin) & (xs <= xmin + width * xres) & (ys >= ymax - height * yres) & (ys <= ymax)
    footprint = None
    if inside.any():
        lon, lat = swath.lon[inside], swath.lat[inside]
        footprint = BBox(float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max()))
    return Grid(crs, transform, width, height, footprint)


def _projected(swath: Swath, crs: CRS) -> tuple[np.ndarray, np.ndarray]:
    """The swath's points in the output CRS (inf where they do not project)."""
    transformer = pyproj.Transformer.from_crs(pyproj.CRS.from_epsg(4326), pyproj.CRS.from_wkt(crs.to_wkt()), always_xy=True)
    xs, ys = transformer.transform(swath.lon, swath.lat, errcheck=False)
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def _spacing(xs: np.ndarray, ys: np.ndarray) -> float:
    """The finer of the median distances between neighbouring pixels along and across the track."""
    steps = []
    for axis in (0, 1):
        if xs.shape[axis] > 1:
            step = np.hypot(np.diff(xs, axis=axis), np.diff(ys, axis=axis))
            step = step[np.isfinite(step) & (step > 0)]
            if step.size:
                steps.append(float(np.median(step)))
    if not steps:
        raise RequestValidationError("The swath has a single point: give scaleSize or width and height with scaleExtent.")
    return min(steps)


def regrid(swath: Swath, grid: Grid, resampling: Resampling) -> dict[str, np.ndarray]:
    """Every variable on the grid, in its own dtype, its _FillValue where the swath does not reach or has no data.

    All variables go through one warp (the geolocation backmap is built once): as floats, with NaN
    standing for each variable's own fill value and each band's nodata judged on its own.
    """
    work_type = np.float64 if any(v.data.dtype.itemsize > 2 for v in swath.variables) else np.float32
    source = np.empty((len(swath.variables), *swath.lat.shape), dtype=work_type)
    for band, variable in zip(source, swath.variables, strict=True):
        band[...] = variable.data
        if variable.fill_value is not None:
            band[variable.data == variable.output_fill] = np.nan
    destination = np.full((len(swath.variables), grid.height, grid.width), np.nan, dtype=work_type)
    reproject(
        source, destination,
        src_crs=WGS84, src_geoloc_array=np.stack([swath.lon, swath.lat]), src_nodata=np.nan,
        dst_crs=grid.crs, dst_transform=grid.transform, dst_nodata=np.nan,
        resampling=resampling, UNIFIED_SRC_NODATA="NO",
    )
    return {variable.name: _restore(plane, variable.data.dtype, variable.output_fill)
            for plane, variable in zip(destination, swath.variables, strict=True)}


def _restore(plane: np.ndarray, dtype: np.dtype, fill: np.generic | np.ndarray) -> np.ndarray:
    """Back to the variable's dtype: integers rounded and clipped to their range, NaN to the fill value."""
    missing = np.isnan(plane)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        plane = np.clip(np.rint(np.nan_to_num(plane)), info.min, info.max)
    out = plane.astype(dtype)
    out[missing] = fill
    return out
