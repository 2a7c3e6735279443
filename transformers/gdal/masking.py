"""Shape subsetting for the gdal transformer: crop to the shape's bounds, then mask what lies outside it.

The mask is applied in the source's own grid and CRS (the shape is projected to it), before any
reprojection, so a pixel is kept exactly when its centre lies in the shape, as gdalwarp -cutline
does; a shape too small to hold any pixel centre keeps the pixels it touches instead.

What "masked" means depends on what the output can say (the rule, in order):
1. an alpha band among the output's bands: alpha 0 outside, colour bands 0 (or their nodata);
2. bands with a nodata value: that value outside;
3. floating-point bands without one: NaN outside, declared as nodata;
4. integer bands with neither: 0 outside, and a mask band (GDAL's per-dataset mask, 0 outside,
   combined with the source's own validity), so no value is taken from the data. GeoTIFF outputs
   keep it (through a warp too), a PNG of one or three bands makes it its alpha; JPEG and GIF
   show the outside as 0.
The masked crop goes to an uncompressed scratch GeoTIFF, written in slabs, which the output
writers then read like any source. Blocking (GDAL): run on worker threads.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyproj
import rasterio
import shapely
from rasterio.enums import ColorInterp
from rasterio.features import geometry_mask
from rasterio.io import DatasetReader
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from geomesh.errors import RequestValidationError
from geomesh.model import BBox

_SLAB_BYTES = 16 * 1024 * 1024
# Up to this many pixels the window's mask is computed once, in one piece (a byte each).
_WHOLE_MASK_PIXELS = 64 * 1024 * 1024
_TILE = 512
# Before projecting, shape edges are cut into pieces of at most this many degrees, so that a
# straight lon/lat edge stays close to its curve in the source CRS.
_SEGMENT_DEGREES = 0.25


def crop_area(shape: BaseGeometry, bbox: BBox | None) -> BBox:
    """The shape's bounds, within the bbox when both are given (the scheduler checked they overlap)."""
    west, south, east, north = shape.bounds
    if bbox is None or bbox.west > bbox.east:
        return BBox(west, south, east, north)
    return BBox(max(west, bbox.west), max(south, bbox.south), min(east, bbox.east), min(north, bbox.north))


def shape_in_crs(shape: BaseGeometry, crs: rasterio.crs.CRS, area: BBox, geographic: bool) -> BaseGeometry:
    """The WGS84 shape cut to `area` (plus a margin) and projected to the source CRS."""
    margin = max(area.east - area.west, area.north - area.south, 1e-6) * 0.01
    frame = box(area.west - margin, max(-90.0, area.south - margin), area.east + margin, min(90.0, area.north + margin))
    shape = shape.intersection(frame)
    if geographic or shape.is_empty:
        return shape
    transformer = pyproj.Transformer.from_crs("EPSG:4326", crs.to_wkt(), always_xy=True)

    def project(coordinates: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(coordinates[:, 0], coordinates[:, 1])
        return np.column_stack([x, y])

    projected = shapely.transform(shapely.segmentize(shape, _SEGMENT_DEGREES), project)
    if not np.isfinite(shapely.get_coordinates(projected)).all():
        raise RequestValidationError(
            f"The shape cannot be projected to the granule's CRS ({crs.to_string()}): part of it lies where that "
            "projection is undefined. Send a shape inside the granule's area."
        )
    return shapely.make_valid(projected)


@contextmanager
def masked_crop(
    src: DatasetReader,
    bands: list[int],
    window: Window,
    shape: BaseGeometry,
    area: BBox,
    granule_id: str,
    scratch_dir: Path | None,
) -> Iterator[DatasetReader]:
    """The window's bands with everything outside `shape` (WGS84) masked, open as a scratch GeoTIFF;
    removed on exit. Raises the "does not intersect granule" error when no pixel is in the shape."""
    geographic = src.crs.is_geographic and pyproj.CRS.from_wkt(src.crs.to_wkt()).equals(
        pyproj.CRS.from_epsg(4326), ignore_axis_order=True
    )
    local = shape_in_crs(shape, src.crs, area, geographic)
    footprint = box(*window_bounds(window, src.transform))
    if local.is_empty or not local.intersects(footprint):
        raise RequestValidationError(
            f"The requested shape does not intersect granule {granule_id}: send a shape that overlaps the "
            "granule's area."
        )
    descriptor, name = tempfile.mkstemp(prefix="geomesh-mask-", suffix=".tif", dir=scratch_dir)
    os.close(descriptor)
    path = Path(name)
    try:
        _write_masked(src, bands, window, local, path)
        with rasterio.open(path) as cropped:
            yield cropped
    finally:
        path.unlink(missing_ok=True)
        Path(str(path) + ".msk").unlink(missing_ok=True)


def _write_masked(src: DatasetReader, bands: list[int], window: Window, local: BaseGeometry, path: Path) -> None:
    width, height = int(window.width), int(window.height)
    dtype = np.result_type(*(src.dtypes[band - 1] for band in bands))
    transform = src.window_transform(window)
    interpretation = [src.colorinterp[band - 1] for band in bands]
    alpha = [i for i, kind in enumerate(interpretation) if kind == ColorInterp.alpha]
    nodata = src.nodatavals[bands[0] - 1]
    if nodata is None and not alpha and dtype.kind == "f":
        nodata = math.nan
    # Rule 4: integers without nodata or alpha get a mask band instead of a stolen value.
    use_mask = nodata is None and not alpha
    inside_all = _whole_mask(local, transform, width, height) if width * height <= _WHOLE_MASK_PIXELS else None
    all_touched = inside_all is None and not _any_centre_inside(local, transform, width, height)
    profile: dict[str, object] = {
        "driver": "GTiff", "width": width, "height": height, "count": len(bands), "dtype": dtype,
        "crs": src.crs, "transform": transform, "nodata": nodata,
    }
    tiled = width >= _TILE and height >= _TILE
    if tiled:
        profile.update(tiled=True, blockxsize=_TILE, blockysize=_TILE)
    slab = max(1, _SLAB_BYTES // max(1, width * len(bands) * dtype.itemsize))
    if tiled:
        slab = max(_TILE, slab - slab % _TILE)
    fill = 0 if nodata is None else nodata
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True, GDAL_PAM_ENABLED="NO"), rasterio.open(path, "w", **profile) as dst:
        for row in range(0, height, slab):
            rows = min(slab, height - row)
            part = Window(window.col_off, window.row_off + row, width, rows)
            if inside_all is not None:
                inside = inside_all[row : row + rows]
            else:
                inside = geometry_mask(
                    [local], out_shape=(rows, width), transform=src.window_transform(part),
                    all_touched=all_touched, invert=True,
                )
            data = src.read(bands, window=part, out_dtype=dtype)
            data[:, ~inside] = fill
            for index in alpha:
                data[index, ~inside] = 0
            target = Window(0, row, width, rows)
            dst.write(data, window=target)
            if use_mask:
                valid = src.dataset_mask(window=part) > 0
                dst.write_mask(np.where(inside & valid, 255, 0).astype(np.uint8), window=target)
        _copy_metadata(src, dst, bands)


def _whole_mask(local: BaseGeometry, transform: rasterio.Affine, width: int, height: int) -> np.ndarray:
    """True for pixels whose centre is in the shape; the pixels it touches if no centre is."""
    inside = geometry_mask([local], out_shape=(height, width), transform=transform, invert=True)
    if inside.any():
        return inside
    return geometry_mask([local], out_shape=(height, width), transform=transform, all_touched=True, invert=True)


def _any_centre_inside(local: BaseGeometry, transform: rasterio.Affine, width: int, height: int) -> bool:
    """Whether some pixel centre of the window lies in the shape (checked on the shape's own pixels only)."""
    inverse = ~transform
    cols, rows = zip(*(inverse * corner for corner in box(*local.bounds).exterior.coords), strict=True)
    col0, col1 = max(0, math.floor(min(cols))), min(width, math.ceil(max(cols)))
    row0, row1 = max(0, math.floor(min(rows))), min(height, math.ceil(max(rows)))
    if col1 <= col0 or row1 <= row0:
        return False
    sub = transform * rasterio.Affine.translation(col0, row0)
    inside = geometry_mask([local], out_shape=(row1 - row0, col1 - col0), transform=sub, invert=True)
    return bool(inside.any())


def _copy_metadata(src: DatasetReader, dst: rasterio.io.DatasetWriter, bands: list[int]) -> None:
    """What the output writers carry over: tags, descriptions, units, colours, scales, offsets, palette."""
    dst.update_tags(**src.tags())
    for out, band in enumerate(bands, start=1):
        if src.descriptions[band - 1]:
            dst.set_band_description(out, src.descriptions[band - 1])
        if src.units[band - 1]:
            dst.set_band_unit(out, src.units[band - 1])
        dst.update_tags(out, **src.tags(band))
        try:
            dst.write_colormap(out, src.colormap(band))
        except ValueError:  # no palette on that band
            pass
    dst.colorinterp = [src.colorinterp[band - 1] for band in bands]
    dst.scales = [src.scales[band - 1] for band in bands]
    dst.offsets = [src.offsets[band - 1] for band in bands]
