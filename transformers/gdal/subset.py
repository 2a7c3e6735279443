"""The raster work of the gdal transformer, without gRPC: pick bands, crop to a bbox, warp, write a file.

Blocking (GDAL): callers run it on worker threads. The output goes to a scratch file that the
caller streams and deletes, so a large output never sits whole in Python memory.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyproj
import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds
from rasterio.windows import bounds as window_bounds
from shapely.geometry.base import BaseGeometry

from geomesh.errors import RequestValidationError, UnsupportedOperationError
from geomesh.model import BBox
from transformers.failures import unprocessable
from transformers.gdal.datasets import DatasetPool
from transformers.gdal.formats import (
    EXTENSIONS,
    NAMES,
    TIFF,
    WRITERS,
    Writer,
    has_mask_band,
)
from transformers.gdal.masking import crop_area, masked_crop
from transformers.gdal.reproject import warped
from transformers.grids import Grid, GridSpec, edges_on_earth, output_grid, target_crs
from transformers.serving import Budget, FileOutput, chosen_format
from transformers.sources import Source

WGS84 = CRS.from_epsg(4326)

# Granule names often end with the source file's extension; Harmony drops it from output names.
_SOURCE_SUFFIX = re.compile(r"\.(tiff?|png|jpe?g|nc4?|h5|he5|hdf5?|zarr)$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class SubsetRequest:
    """One granule's work, in domain terms (the service converts the WorkItem into this)."""

    granule_id: str
    granule_name: str
    source: Source
    media_type: str
    variables: tuple[str, ...] = ()
    bbox: BBox | None = None
    # A polygonal shape in WGS84 (geomesh.shapes): crop to its bounds (within bbox), mask outside it.
    shape: BaseGeometry | None = None
    # Output CRS and grid (outputCrs, scaleExtent, scaleSize, width, height, interpolation).
    grid: GridSpec = GridSpec()


def output_format(media_type: str) -> str:
    """The supported media type asked for (parameters and case ignored), or UnsupportedOperationError."""
    return chosen_format(media_type, "gdal", list(EXTENSIONS))


def output_file_name(
    granule_name: str, variables: Sequence[str], subsetted: bool, media_type: str, regridded: bool = False
) -> str:
    """Harmony style: <granule>[_<variable>][_regridded][_subsetted].<ext>.

    "_regridded" marks any warp (another CRS or grid), as harmony-service-lib's
    generate_output_filename does, rather than a geomesh-only "_reprojected".
    """
    name = _SOURCE_SUFFIX.sub("", granule_name) or "output"
    if len(variables) == 1:
        name += "_" + re.sub(r"[^\w.-]+", "_", variables[0]).strip("_")
    if regridded:
        name += "_regridded"
    if subsetted:
        name += "_subsetted"
    return name + EXTENSIONS[media_type]


def subset(
    request: SubsetRequest, pool: DatasetPool, scratch_dir: Path | None = None, budget: Budget = Budget()
) -> FileOutput:
    """Read only the requested bands and window of a granule and write them in the requested format,
    once the output's grid is known to be within budget."""
    try:
        return _subset(request, pool, scratch_dir, budget)
    except (CPLE_BaseError, RasterioError) as error:  # GDAL's message names scratch and /vsimem/ files
        problem = "GDAL could not read, warp or write it as asked"
        raise unprocessable(request.granule_id, problem, error, request.source.href) from error


def _subset(request: SubsetRequest, pool: DatasetPool, scratch_dir: Path | None, budget: Budget) -> FileOutput:
    media_type = output_format(request.media_type)
    with pool.open(request.source, scratch_dir) as src:
        bands = _band_indexes(src, request.variables, request.granule_id)
        if media_type != TIFF and len(bands) > 4:
            raise RequestValidationError(
                f"{NAMES[media_type]} holds at most 4 variables (gray, gray+alpha, RGB or RGBA) but "
                f"{len(bands)} were selected: ask for fewer variables or for image/tiff."
            )
        if request.shape is None:
            window = _window(src, request.bbox, request.granule_id)
            _within(budget, src, bands, window, request)
            bbox, path, grid = _output(src, bands, window, request, scratch_dir)
        else:
            area = crop_area(request.shape, request.bbox)
            window = _window(src, area, request.granule_id, subject="shape")
            _within(budget, src, bands, window, request)
            with masked_crop(src, bands, window, request.shape, area, request.granule_id, scratch_dir) as cropped:
                whole = Window(0, 0, cropped.width, cropped.height)
                bbox, path, grid = _output(cropped, list(cropped.indexes), whole, request, scratch_dir)
    return FileOutput(
        path=path,
        media_type=media_type,
        file_name=output_file_name(
            request.granule_name,
            request.variables,
            request.bbox is not None or request.shape is not None,
            media_type,
            grid is not None,
        ),
        bbox=bbox,
        size_bytes=path.stat().st_size,
    )


def _within(budget: Budget, src: DatasetReader, bands: list[int], window: Window, request: SubsetRequest) -> None:
    """The output's grid (the window's, or the warp's) against the budget, before any pixel is read."""
    grid = _warp_grid(src, window, request.grid, request.granule_id)
    width, height = (grid.width, grid.height) if grid is not None else (int(window.width), int(window.height))
    itemsize = max(np.dtype(src.dtypes[band - 1]).itemsize for band in bands)
    # One more plane: the alpha or mask a warp or a shape adds.
    budget.check(f"granule {request.granule_id}", width, height, len(bands) + 1, itemsize)


def _output(
    src: DatasetReader, bands: list[int], window: Window, request: SubsetRequest, scratch_dir: Path | None
) -> tuple[BBox | None, Path, Grid | None]:
    """Warp if asked, then write: the output's WGS84 bbox, its scratch file, and the grid warped onto."""
    media_type = output_format(request.media_type)
    grid = _warp_grid(src, window, request.grid, request.granule_id)
    writer, extension = WRITERS[media_type], EXTENSIONS[media_type]
    if grid is None:
        return _wgs84_bounds(src, window), _write(src, src, bands, window, writer, scratch_dir, extension), None
    with warped(src, window, grid, request.grid.resampling, add_alpha=has_mask_band(src, bands)) as vrt:
        whole = Window(0, 0, vrt.width, vrt.height)
        return _warped_bounds(vrt, src, window), _write(vrt, src, bands, whole, writer, scratch_dir, extension), grid


def _warp_grid(src: DatasetReader, window: Window, spec: GridSpec, granule_id: str) -> Grid | None:
    """The grid to warp onto, or None when the output stays in the source's own grid."""
    if not spec.crs and not spec.regrids:
        return None
    if src.crs is None:
        raise UnsupportedOperationError(f"Granule {granule_id} has no CRS, so it cannot be reprojected or regridded.")
    crs = target_crs(spec.crs) if spec.crs else src.crs
    if not spec.regrids and _same_crs(crs.to_wkt(), src.crs.to_wkt()):
        return None
    bounds = window_bounds(window, src.transform)
    return output_grid(src.crs, bounds, (int(window.width), int(window.height)), crs, spec, granule_id)


@lru_cache(maxsize=256)
def _same_crs(wkt: str, other_wkt: str) -> bool:
    """Equal up to axis order (CRS84 and EPSG:4326 need no reprojection between them)."""
    return pyproj.CRS.from_wkt(wkt).equals(pyproj.CRS.from_wkt(other_wkt), ignore_axis_order=True)


def _band_indexes(src: DatasetReader, variables: Sequence[str], granule_id: str) -> list[int]:
    """Band numbers for variable names matched against band descriptions; none named means all."""
    if not variables:
        return list(src.indexes)
    by_name: dict[str, int] = {}
    for index, description in zip(src.indexes, src.descriptions, strict=True):
        if description:
            by_name.setdefault(description, index)
    found: list[int] = []
    missing: list[str] = []
    for variable in variables:
        index = by_name.get(variable) or by_name.get(variable.rsplit("/", 1)[-1])
        if index is None:
            missing.append(variable)
        elif index not in found:
            found.append(index)
    if missing:
        names = ", ".join(by_name) or "none named"
        raise RequestValidationError(
            f"Granule {granule_id} has no variable named {', '.join(missing)} (its variables: {names})."
        )
    return found


def _window(src: DatasetReader, bbox: BBox | None, granule_id: str, subject: str = "bounding box") -> Window:
    """The pixel window of a WGS84 bbox: whole pixels, edges within half a pixel, clipped to the data.

    `subject` names what the bbox came from in the error (a shape's bounds, for a shape)."""
    if bbox is None:
        return Window(0, 0, src.width, src.height)
    if src.crs is None:
        raise UnsupportedOperationError(f"Granule {granule_id} has no CRS, so it cannot be subset by {subject}.")
    if bbox.west > bbox.east:
        raise UnsupportedOperationError("Bounding boxes crossing the antimeridian are not supported yet.")
    extent = _wgs84_bounds(src, Window(0, 0, src.width, src.height))
    assert extent is not None
    west, south = max(bbox.west, extent.west), max(bbox.south, extent.south)
    east, north = min(bbox.east, extent.east), min(bbox.north, extent.north)
    if not (_overlaps(bbox.west, bbox.east, west, east) and _overlaps(bbox.south, bbox.north, south, north)):
        raise RequestValidationError(
            f"The requested {subject} does not intersect granule {granule_id}, whose extent is "
            f"{extent.west:g},{extent.south:g},{extent.east:g},{extent.north:g} (west,south,east,north)."
        )
    left, bottom, right, top = transform_bounds(WGS84, src.crs, west, south, east, north, densify_pts=21)
    exact = from_bounds(left, bottom, right, top, src.transform)
    cols = _pixel_span(exact.col_off, exact.col_off + exact.width, src.width)
    rows = _pixel_span(exact.row_off, exact.row_off + exact.height, src.height)
    return Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0])


def _overlaps(low: float, high: float, clipped_low: float, clipped_high: float) -> bool:
    """Whether clipping [low, high] left something: an area, or the point a degenerate bbox is."""
    return clipped_low < clipped_high or (low == high and clipped_low <= clipped_high)


def _pixel_span(start: float, stop: float, size: int) -> tuple[int, int]:
    """Whole pixels at least half inside [start, stop) (ties go outward), at least one, within [0, size)."""
    first = max(0, math.ceil(start - 0.5 - 1e-6))
    last = min(size, math.floor(stop + 0.5 + 1e-6))
    if last <= first:
        first = min(max(0, math.floor((start + stop) / 2)), size - 1)
        last = first + 1
    return first, last


def _warped_bounds(vrt: WarpedVRT, src: DatasetReader, window: Window) -> BBox | None:
    """A warped output's WGS84 bbox: its edges projected back, when they all lie on the Earth.

    Where the output CRS covers part of the Earth only (an orthographic view), the grid reaches
    past it, and GDAL's answer held infinities, swapped edges or a quarter of the area: the bbox
    of the source area is used then, which holds all of the output's data."""
    whole = Window(0, 0, vrt.width, vrt.height)
    if vrt.crs is None or not edges_on_earth(vrt.crs, window_bounds(whole, vrt.transform)):
        return _wgs84_bounds(src, window)
    return _wgs84_bounds(vrt, whole)


def _wgs84_bounds(src: DatasetReader | WarpedVRT, window: Window) -> BBox | None:
    if src.crs is None:
        return None
    left, bottom, right, top = window_bounds(window, src.transform)
    if not src.crs.is_geographic or not _same_crs(src.crs.to_wkt(), WGS84.to_wkt()):
        left, bottom, right, top = transform_bounds(src.crs, WGS84, left, bottom, right, top, densify_pts=21)
    return BBox(min(left, right), min(bottom, top), max(left, right), max(bottom, top))


def _write(
    src: DatasetReader | WarpedVRT,
    meta: DatasetReader,
    bands: list[int],
    window: Window,
    writer: Writer,
    scratch_dir: Path | None,
    extension: str,
) -> Path:
    """Write to a fresh scratch file, removed again if writing fails."""
    descriptor, name = tempfile.mkstemp(prefix="geomesh-gdal-", suffix=extension, dir=scratch_dir)
    os.close(descriptor)
    path = Path(name)
    try:
        # No PAM: nothing may leave a .aux.xml sidecar beside the output.
        with rasterio.Env(GDAL_PAM_ENABLED="NO"):
            writer(src, meta, bands, window, path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
