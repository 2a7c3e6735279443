"""Reprojection and regridding of a geographic grid with rioxarray, sized as the gdal family sizes grids.

The output grid comes from transformers.grids.output_grid (gdalwarp's -te, -tr, -ts rules)
applied to the selected window, so the same request gives the same grid from either family. Only
the selected window is read (into memory) before the warp.
"""

from __future__ import annotations

import numpy as np
import pyproj
import xarray as xr
from rasterio.crs import CRS
from rasterio.transform import array_bounds
from rasterio.warp import transform_bounds

from geomesh.model import BBox
from transformers.grids import Grid, GridSpec, edges_on_earth, output_grid, target_crs
from transformers.netcdf.grids import Axes, north_up_transform, require_grid, source_crs

GRID_MAPPING = "crs"
_GEOGRAPHIC_ATTRS = {
    "lat": {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north", "axis": "Y"},
    "lon": {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east", "axis": "X"},
}


def target_grid(
    ds: xr.Dataset, axes: Axes, spec: GridSpec, sizes: tuple[float, float], granule_id: str
) -> Grid | None:
    """The grid to warp onto, or None when the output keeps the source's own grid."""
    if not spec.crs and not spec.regrids:
        return None
    lat, lon = require_grid(axes, granule_id, "reprojection or regridding")
    src_crs = source_crs(ds)
    crs = target_crs(spec.crs) if spec.crs else CRS.from_wkt(src_crs.to_wkt())
    if not spec.regrids and pyproj.CRS.from_wkt(crs.to_wkt()).equals(src_crs, ignore_axis_order=True):
        return None
    lats, lons = ds[lat].values, ds[lon].values
    shape = (lons.size, lats.size)
    bounds = array_bounds(shape[1], shape[0], north_up_transform(lats, lons, sizes, granule_id))
    return output_grid(CRS.from_wkt(src_crs.to_wkt()), bounds, shape, crs, spec, granule_id)


def regrid(ds: xr.Dataset, axes: Axes, grid: Grid, spec: GridSpec) -> xr.Dataset:
    """Every variable on both spatial dimensions warped onto `grid`; the others are kept as they are."""
    assert axes.lat is not None and axes.lon is not None
    lat, lon = axes.lat, axes.lon
    src_crs = source_crs(ds)
    if ds[lat].size > 1 and ds[lat].values[0] < ds[lat].values[-1]:
        ds = ds.isel({lat: slice(None, None, -1)})  # north-up, as GDAL expects
    ds = ds.rio.set_spatial_dims(x_dim=lon, y_dim=lat).rio.write_crs(src_crs.to_wkt())
    geographic = grid.crs.is_geographic
    out = xr.Dataset(attrs=ds.attrs)
    dropped = {lat, lon, *_bounds_of(ds, lat, lon), "spatial_ref", GRID_MAPPING}
    for name, variable in ds.data_vars.items():
        if {lat, lon} <= set(variable.dims):
            warped = _warp(variable, lat, lon, grid, spec)
            warped = warped.drop_vars([c for c in warped.coords if c in dropped], errors="ignore")
            warped.encoding = {k: v for k, v in variable.encoding.items() if k in ("dtype", "chunksizes")}
            warped.attrs.pop("grid_mapping", None)
            out[name] = warped
        else:
            out[name] = variable.drop_vars([c for c in variable.coords if c in dropped], errors="ignore")
    for name, coordinate in ds.coords.items():
        if name not in dropped and name not in out.coords and not ({lat, lon} & set(coordinate.dims)):
            out = out.assign_coords({name: coordinate})
    if geographic:
        out = out.rename({"x": "lon", "y": "lat"})
        for name, attrs in _GEOGRAPHIC_ATTRS.items():
            if name in out.coords:
                out[name].attrs = dict(attrs)
    return with_grid_mapping(out, grid.crs.to_wkt(), "lon" if geographic else "x", "lat" if geographic else "y")


def _warp(variable: xr.DataArray, lat: str, lon: str, grid: Grid, spec: GridSpec) -> xr.DataArray:
    """rioxarray warps 2-D and 3-D arrays: other dimensions are stacked into one for the warp, then unstacked."""
    fill = variable.attrs.get("_FillValue", variable.encoding.get("_FillValue"))
    extra = [dim for dim in variable.dims if dim not in (lat, lon)]
    if len(extra) > 1:
        flat = variable.stack(__stacked__=extra).transpose("__stacked__", lat, lon)
        flat = flat.drop_vars(["__stacked__", *extra]).assign_coords(__stacked__=np.arange(flat.sizes["__stacked__"]))
    else:
        flat = variable.transpose(*extra, lat, lon)
    warped = flat.rio.reproject(
        grid.crs, shape=(grid.height, grid.width), transform=grid.transform, resampling=spec.resampling, nodata=fill
    )
    if len(extra) > 1:
        shape = [variable.sizes[dim] for dim in extra]
        values = warped.values.reshape(*shape, grid.height, grid.width)
        coords = {dim: variable[dim] for dim in extra if dim in variable.coords}
        coords.update({"y": warped["y"], "x": warped["x"]})
        warped = xr.DataArray(values, dims=(*extra, "y", "x"), coords=coords, attrs=warped.attrs, name=variable.name)
    return warped


def with_grid_mapping(ds: xr.Dataset, crs_wkt: str, x_dim: str, y_dim: str) -> xr.Dataset:
    """A CF grid_mapping variable (pyproj's CF attributes) that every gridded variable points at."""
    previous = {str(v.encoding.get("grid_mapping") or v.attrs.get("grid_mapping") or "") for v in ds.data_vars.values()}
    ds = ds.drop_vars([name for name in previous if name and name != GRID_MAPPING and name in ds.variables])
    ds = ds.rio.set_spatial_dims(x_dim=x_dim, y_dim=y_dim).rio.write_crs(crs_wkt, grid_mapping_name=GRID_MAPPING)
    ds[GRID_MAPPING].attrs = {**pyproj.CRS.from_wkt(crs_wkt).to_cf(), **_rio_extras(ds[GRID_MAPPING].attrs)}
    for name, variable in ds.data_vars.items():
        if {x_dim, y_dim} <= set(variable.dims):
            variable.attrs.pop("grid_mapping", None)
            variable.encoding["grid_mapping"] = GRID_MAPPING
    return ds


def _rio_extras(attrs: dict[str, object]) -> dict[str, object]:
    """GDAL reads `spatial_ref` (and the GeoTransform) too: keep them beside CF's attributes."""
    return {key: value for key, value in attrs.items() if key in ("spatial_ref", "GeoTransform")}


def _bounds_of(ds: xr.Dataset, *names: str) -> list[str]:
    found = []
    for name in names:
        bounds = ds[name].attrs.get("bounds") or ds[name].encoding.get("bounds")
        if bounds:
            found.append(str(bounds))
    return found


def grid_extent(grid: Grid) -> BBox | None:
    """The warped grid's extent in WGS84 (densified, so curved edges are covered); None when the
    grid reaches past the part of the Earth its CRS covers (an orthographic view)."""
    left, top = grid.transform.c, grid.transform.f
    right = left + grid.transform.a * grid.width
    bottom = top + grid.transform.e * grid.height
    bounds = (min(left, right), min(top, bottom), max(left, right), max(top, bottom))
    if not edges_on_earth(grid.crs, bounds):
        return None
    west, south, east, north = transform_bounds(grid.crs, CRS.from_epsg(4326), *bounds, densify_pts=21)
    if not all(np.isfinite((west, south, east, north))):
        return None
    return BBox(west, south, east, north)
