"""One granule's work, without gRPC: open lazily, select, regrid, write one output file.

Blocking (NetCDF, GDAL): the service runs it on worker threads. The dataset is opened lazily and
without mask/scale decoding, so values, _FillValue, scale_factor and add_offset reach the output
as the source has them, and only the selected window is read (into memory: writers and warps
need it whole anyway, and the file can then be closed before the slow part).
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import xarray as xr
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError

from geomesh.errors import GeomeshError, UnsupportedOperationError
from geomesh.model import BBox, TimeRange
from transformers.failures import unprocessable
from transformers.grids import GridSpec
from transformers.netcdf.grids import (
    Axes,
    cell_sizes,
    find_axes,
    source_crs,
    wgs84_extent,
)
from transformers.netcdf.regrid import (
    grid_extent,
    regrid,
    target_grid,
    with_grid_mapping,
)
from transformers.netcdf.subset import (
    DimensionRange,
    apply_ranges,
    bbox_ranges,
    dimension_ranges,
    select_variables,
    time_ranges,
)
from transformers.netcdf.writers import (
    EXTENSIONS,
    NETCDF4,
    TIFF,
    output_file_name,
    with_history,
    write_cog,
    write_netcdf,
    write_zarr_zip,
)
from transformers.serving import Budget, FileOutput
from transformers.sources import DataAccess, Source

# netCDF-C and its HDF5 are not thread-safe, and xarray locks only their data reads and writes,
# not opening a file or reading its metadata: every netCDF4 call of this family goes through this
# lock. What needs no file (warping, Zarr, the COG) runs outside it, in parallel.
NETCDF_LIBRARY = threading.Lock()


@dataclass(frozen=True, slots=True)
class NetcdfRequest:
    """One granule's work in domain terms (the service converts the WorkItem into this)."""

    granule_id: str
    granule_name: str
    source: Source
    media_type: str
    variables: tuple[str, ...] = ()
    bbox: BBox | None = None
    temporal: TimeRange | None = None
    dimensions: tuple[DimensionRange, ...] = field(default_factory=tuple)
    grid: GridSpec = GridSpec()


def _extra_planes(ds: xr.Dataset, axes: Axes) -> int:
    """2-D planes per variable beyond lat/lon (times, levels): a warp makes each of them."""
    sizes = [size for dim, size in ds.sizes.items() if dim not in (axes.lat, axes.lon)]
    planes = 1
    for size in sizes:
        planes *= size
    return max(1, planes)


def open_granule(path: Path) -> xr.Dataset:
    """Lazily, undecoded values; grid mappings and bounds as coordinates so selections keep them."""
    return xr.open_dataset(
        path, engine="netcdf4", mask_and_scale=False, decode_coords="all", decode_timedelta=False, cache=False
    )


def process(
    request: NetcdfRequest, access: DataAccess, scratch_dir: Path | None = None, budget: Budget = Budget()
) -> FileOutput:
    """Subset, regrid and write one granule; the output is a fresh scratch file the caller deletes."""
    what = f"granule {request.granule_id}"
    try:
        # A remote granule is copied first, outside the library lock: downloads run in parallel.
        with access.local_file(request.source, scratch_dir) as granule_path, NETCDF_LIBRARY:
            with open_granule(granule_path) as source:
                selection = _select(source, request)
                sizes = cell_sizes(source, selection.axes)
                variables = len(selection.dataset.data_vars)
                budget.check_bytes(what, int(selection.dataset.nbytes), f"{variables} variables of the selection")
                ds = selection.dataset.load()  # the selected window only; the file is closed after this
        axes, notes = selection.axes, selection.notes
        grid = target_grid(ds, axes, request.grid, sizes, request.granule_id)
        if grid is not None:
            itemsize = max((v.dtype.itemsize for v in ds.data_vars.values()), default=8)
            budget.check(what, grid.width, grid.height, len(ds.data_vars) * _extra_planes(ds, axes), itemsize)
        if grid is not None:
            # Where the grid's own extent cannot be told (it reaches past its CRS), the source area's holds the data.
            bbox: BBox | None = grid_extent(grid) or wgs84_extent(ds, axes, sizes)
            ds = regrid(ds, axes, grid, request.grid)
            notes.append(f"regridded to {grid.crs.to_string()} ({grid.width}x{grid.height})")
            x_dim, y_dim = ("lon", "lat") if grid.crs.is_geographic else ("x", "y")
        else:
            bbox = wgs84_extent(ds, axes, sizes)
            x_dim, y_dim = axes.lon or "", axes.lat or ""
            if axes.gridded:
                ds = with_grid_mapping(ds, source_crs(ds).to_wkt(), x_dim, y_dim)
        ds = with_history(ds, "; ".join(notes) or f"converted to {request.media_type}")
        on_grid = grid is not None or axes.gridded
        path = _write(ds, request.media_type, scratch_dir, (x_dim, y_dim) if on_grid else None, request.granule_id)
    except GeomeshError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, CPLE_BaseError, RasterioError) as error:  # GDAL's too, for warps
        raise unprocessable(
            request.granule_id, f"it could not be read, subset or written as {request.media_type}", error, request.source.href
        ) from error
    return FileOutput(
        path=path,
        media_type=request.media_type,
        file_name=output_file_name(
            request.granule_name, request.variables, selection.subsetted, request.media_type, grid is not None
        ),
        bbox=bbox,
        size_bytes=path.stat().st_size,
    )


@dataclass
class _Selection:
    dataset: xr.Dataset  # still lazy
    axes: Axes
    notes: list[str]  # what was done, for `history`
    subsetted: bool  # a bbox, dimension or time subset cut something ("_subsetted" in the name)


def _select(source: xr.Dataset, request: NetcdfRequest) -> _Selection:
    """Variables, then every index range in one isel."""
    axes = find_axes(source)
    notes: list[str] = []
    ds = select_variables(source, request.variables, request.granule_id)
    if request.variables:
        notes.append("variables " + ",".join(request.variables))
    ranges = []
    subsetted = request.bbox is not None or bool(request.dimensions)
    if request.bbox is not None:
        ranges.append(bbox_ranges(ds, axes, request.bbox, request.granule_id))
        b = request.bbox
        notes.append(f"bbox {b.west:g},{b.south:g},{b.east:g},{b.north:g}")
    if request.temporal is not None:
        selected = time_ranges(ds, axes, request.temporal, request.granule_id)
        # A range that keeps every step only chose the granule: nothing was cut.
        if selected and axes.time and selected[axes.time] != slice(0, ds.sizes[axes.time]):
            ranges.append(selected)
            subsetted = True
            notes.append(f"time {request.temporal.start or '..'}/{request.temporal.end or '..'}")
    if request.dimensions:
        ranges.append(dimension_ranges(ds, axes, request.dimensions, request.granule_id))
        notes.append("dimensions " + ",".join(f"{d.name}({d.low}:{d.high})" for d in request.dimensions))
    return _Selection(apply_ranges(ds, *ranges), axes, notes, subsetted)


def _write(
    ds: xr.Dataset, media_type: str, scratch_dir: Path | None, grid_dims: tuple[str, str] | None, granule_id: str
) -> Path:
    """Write to a fresh scratch file, removed again if writing fails; grid_dims: (x, y) of a grid, if on one."""
    if media_type == TIFF and grid_dims is None:
        raise UnsupportedOperationError(
            f"Granule {granule_id} is not on a latitude/longitude grid, so it cannot be written as a GeoTIFF."
        )
    descriptor, name = tempfile.mkstemp(prefix="geomesh-netcdf-", suffix=EXTENSIONS[media_type], dir=scratch_dir)
    os.close(descriptor)
    path = Path(name)
    try:
        if media_type == TIFF:
            assert grid_dims is not None
            write_cog(ds, path, *grid_dims)
        elif media_type == NETCDF4:
            with NETCDF_LIBRARY:
                write_netcdf(ds, path)
        else:
            write_zarr_zip(ds, path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
