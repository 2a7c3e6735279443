"""What a NetCDF dataset's axes are: which coordinates are latitude, longitude and time, and its CRS.

CF says how to recognize them (standard_name, units, axis); names such as lat/lon are the
fallback. A grid here has 1-D latitude and longitude dimension coordinates; 2-D ones (swaths)
are recognized so that the operations they cannot take are refused clearly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyproj
import rioxarray  # noqa: F401  (registers the .rio accessor on xarray objects)
import xarray as xr
from affine import Affine

from geomesh.errors import UnsupportedOperationError
from geomesh.model import BBox

WGS84 = pyproj.CRS.from_epsg(4326)
_LAT_UNITS = {"degrees_north", "degree_north", "degree_n", "degrees_n", "degreen", "degreesn"}
_LON_UNITS = {"degrees_east", "degree_east", "degree_e", "degrees_e", "degreee", "degreese"}
_LAT_NAMES = {"lat", "latitude", "nav_lat"}
_LON_NAMES = {"lon", "longitude", "long", "nav_lon"}


@dataclass(frozen=True, slots=True)
class Axes:
    """Names of the spatial and time coordinates; lat/lon None when the dataset has none."""

    lat: str | None
    lon: str | None
    time: str | None
    gridded: bool  # 1-D lat and lon, each its own dimension

    @property
    def geographic(self) -> bool:
        return self.lat is not None and self.lon is not None


def _is(variable: xr.Variable, name: str, standard: str, units: set[str], names: set[str]) -> bool:
    attrs = variable.attrs
    if attrs.get("standard_name") == standard:
        return True
    if str(attrs.get("units", "")).strip().lower() in units:
        return True
    return name.lower() in names


def find_axes(ds: xr.Dataset) -> Axes:
    """The dataset's latitude, longitude and time coordinates, by CF attributes first, then names.

    Dimension coordinates are looked at first (a grid); then 2-D variables (a swath's lat/lon).
    """
    found: dict[str, str] = {}
    dimension_coords = [(str(n), v) for n, v in ds.variables.items() if v.dims == (n,)]
    two_d = [(str(n), v) for n, v in ds.variables.items() if v.ndim == 2]
    for name, variable in (*dimension_coords, *two_d):
        for role, standard, units, names in (
            ("lat", "latitude", _LAT_UNITS, _LAT_NAMES), ("lon", "longitude", _LON_UNITS, _LON_NAMES)
        ):
            if role not in found and _is(variable, name, standard, units, names):
                found[role] = name
                break
    for name, variable in dimension_coords:
        if np.issubdtype(variable.dtype, np.datetime64) or variable.attrs.get("standard_name") == "time":
            found.setdefault("time", name)
    lat, lon = found.get("lat"), found.get("lon")
    gridded = lat is not None and lon is not None and ds[lat].dims == (lat,) and ds[lon].dims == (lon,)
    return Axes(lat, lon, found.get("time"), gridded)


def require_grid(axes: Axes, granule_id: str, operation: str) -> tuple[str, str]:
    """The lat and lon dimension names, or UnsupportedOperationError naming what the granule is."""
    if axes.gridded:
        assert axes.lat is not None and axes.lon is not None
        return axes.lat, axes.lon
    if axes.geographic:
        raise UnsupportedOperationError(
            f"Granule {granule_id} has 2-D latitude/longitude (a swath), so the netcdf transformer cannot do "
            f"{operation} on it: it can convert it, or subset its variables."
        )
    raise UnsupportedOperationError(
        f"Granule {granule_id} has no latitude/longitude coordinates, so the netcdf transformer cannot do {operation} on it."
    )


def source_crs(ds: xr.Dataset) -> pyproj.CRS:
    """The CRS its grid_mapping declares; WGS 84 when there is none (CF's lat/lon are geodetic)."""
    crs = ds.rio.crs
    return pyproj.CRS.from_wkt(crs.to_wkt()) if crs is not None else WGS84


def regular_step(values: np.ndarray, name: str, granule_id: str) -> float:
    """The constant spacing of a coordinate, signed; irregular axes cannot be warped by an affine grid."""
    steps = np.diff(values.astype(np.float64))
    step = float(steps.mean())
    if not np.allclose(steps, step, rtol=1e-6, atol=1e-9 * max(1.0, abs(step))):
        raise UnsupportedOperationError(
            f"Granule {granule_id}'s {name} is not evenly spaced, so the netcdf transformer cannot regrid it."
        )
    return step


def north_up_transform(lats: np.ndarray, lons: np.ndarray, sizes: tuple[float, float], granule_id: str) -> Affine:
    """The affine transform of the grid read north-up; `sizes` (the source's cells) serve a one-cell subset."""
    dy = abs(regular_step(lats, "latitude", granule_id)) if lats.size > 1 else sizes[0]
    dx = abs(regular_step(lons, "longitude", granule_id)) if lons.size > 1 else sizes[1]
    if not (dx > 0 and dy > 0):
        raise UnsupportedOperationError(
            f"Granule {granule_id} has a single latitude or longitude, so its cell size is unknown: it cannot be regridded."
        )
    return Affine(dx, 0.0, float(lons.min()) - dx / 2, 0.0, -dy, float(lats.max()) + dy / 2)


def cell_size(values: np.ndarray) -> float:
    """The spacing of a 1-D coordinate of cell centres (0 for a single value)."""
    return abs(float(values[1]) - float(values[0])) if values.size > 1 else 0.0


def cell_extent(values: np.ndarray, size: float | None = None) -> tuple[float, float]:
    """The outer cell edges of a 1-D coordinate of cell centres (half a cell beyond the extremes)."""
    half = (cell_size(values) if size is None else size) / 2
    return float(values.min()) - half, float(values.max()) + half


def cell_sizes(ds: xr.Dataset, axes: Axes) -> tuple[float, float]:
    """(lat, lon) cell sizes of a grid, read before a subset leaves maybe one cell to measure."""
    if not axes.gridded:
        return 0.0, 0.0
    assert axes.lat is not None and axes.lon is not None
    return cell_size(ds[axes.lat].values), cell_size(ds[axes.lon].values)


def wgs84_extent(ds: xr.Dataset, axes: Axes, sizes: tuple[float, float]) -> BBox | None:
    """The extent of a geographic grid (cell edges), or None when it has no 1-D lat/lon."""
    if not axes.gridded:
        return None
    assert axes.lat is not None and axes.lon is not None
    south, north = cell_extent(ds[axes.lat].values, sizes[0])
    west, east = cell_extent(ds[axes.lon].values, sizes[1])
    if west >= 180.0 - 1e-9 or east > 180.0 + 1e-9:  # 0-360 longitudes
        west, east = (west - 360.0, east - 360.0) if west >= 180.0 - 1e-9 else (-180.0, 180.0)
    return BBox(max(west, -180.0), max(south, -90.0), min(east, 180.0), min(north, 90.0))
