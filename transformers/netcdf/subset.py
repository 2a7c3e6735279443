"""Selections on an open (lazy) dataset: variables by name, and index ranges along its dimensions.

Every selection becomes one contiguous index range per dimension, applied with a single `isel`,
so only the selected window is ever read from the file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import xarray as xr

from geomesh.errors import RequestValidationError, UnsupportedOperationError
from geomesh.model import BBox, TimeRange
from transformers.netcdf.grids import Axes, cell_extent, require_grid

# A cell whose centre lies on a bbox edge is kept (as the gdal family keeps pixels half inside).
_EDGE = 1e-9


@dataclass(frozen=True, slots=True)
class DimensionRange:
    """subset=<dim>(min:max) on a dimension other than lat, lon and time; None is an open end."""

    name: str
    low: float | None = None
    high: float | None = None


def select_variables(ds: xr.Dataset, names: Sequence[str], granule_id: str) -> xr.Dataset:
    """Keep the named data variables (all when none are named), and every coordinate they need.

    Opened with decode_coords="all", grid mappings and bounds are coordinates, so they stay.
    """
    if not names:
        return ds
    available = [str(name) for name in ds.data_vars]
    wanted: list[str] = []
    missing: list[str] = []
    for name in names:
        found = name if name in ds.data_vars else name.rsplit("/", 1)[-1]
        if found in ds.data_vars:
            if found not in wanted:
                wanted.append(found)
        else:
            missing.append(name)
    if missing:
        raise RequestValidationError(
            f"Granule {granule_id} has no variable named {', '.join(missing)} (its variables: {', '.join(available)})."
        )
    return ds.drop_vars([name for name in available if name not in wanted])


def _span(mask: np.ndarray) -> slice | None:
    """The contiguous index range of a mask over a monotonic coordinate; None when it is empty."""
    hits = np.flatnonzero(mask)
    return slice(int(hits[0]), int(hits[-1]) + 1) if hits.size else None


def _intersect(ranges: dict[str, slice], dim: str, new: slice) -> None:
    old = ranges.get(dim)
    ranges[dim] = new if old is None else slice(max(old.start, new.start), min(old.stop, new.stop))


def bbox_ranges(ds: xr.Dataset, axes: Axes, bbox: BBox, granule_id: str) -> dict[str, slice]:
    """Index ranges of the cells whose centres are inside a WGS84 bbox (lat either way up)."""
    lat, lon = require_grid(axes, granule_id, "bounding-box subsetting")
    if bbox.west > bbox.east:
        raise UnsupportedOperationError("Bounding boxes crossing the antimeridian are not supported yet.")
    lats, lons = ds[lat].values, ds[lon].values
    west, east = bbox.west, bbox.east
    if float(lons.max()) > 180.0:  # a 0-360 grid
        if east - west >= 360.0 - _EDGE:
            west, east = 0.0, 360.0
        else:
            west, east = west % 360.0, (east % 360.0) or 360.0
        if west > east:
            raise UnsupportedOperationError(
                f"Granule {granule_id} has 0-360 longitudes and the bounding box crosses 0: split it in two requests."
            )
    south_edge, north_edge = cell_extent(lats)
    west_edge, east_edge = cell_extent(lons)
    if bbox.south > north_edge or bbox.north < south_edge or west > east_edge or east < west_edge:
        raise RequestValidationError(
            f"The requested bounding box does not intersect granule {granule_id}, whose extent is "
            f"{west_edge:g},{south_edge:g},{east_edge:g},{north_edge:g} (west,south,east,north)."
        )
    ranges: dict[str, slice] = {}
    for dim, values, low, high in ((lat, lats, bbox.south, bbox.north), (lon, lons, west, east)):
        inside = _span((values >= low - _EDGE) & (values <= high + _EDGE))
        if inside is None:  # thinner than a cell: the cell nearest its middle
            nearest = int(np.abs(values - (low + high) / 2).argmin())
            inside = slice(nearest, nearest + 1)
        ranges[dim] = inside
    return ranges


def time_ranges(ds: xr.Dataset, axes: Axes, temporal: TimeRange, granule_id: str) -> dict[str, slice]:
    """The time steps within the range (by their bounds when the file has them); empty if no time axis."""
    if axes.time is None:
        return {}
    coordinate = ds[axes.time]
    if not np.issubdtype(coordinate.dtype, np.datetime64):
        raise UnsupportedOperationError(
            f"Granule {granule_id}'s time axis uses a calendar the netcdf transformer cannot compare with dates."
        )
    start = _naive(temporal.start) if temporal.start else np.datetime64("NaT")
    end = _naive(temporal.end) if temporal.end else np.datetime64("NaT")
    bounds_name = coordinate.attrs.get("bounds") or coordinate.encoding.get("bounds")
    if bounds_name in ds.variables and ds[bounds_name].ndim == 2:
        bounds = ds[bounds_name].values
        first, last = bounds.min(axis=1), bounds.max(axis=1)
    else:
        first = last = coordinate.values
    mask = np.ones(first.shape, dtype=bool)
    if not np.isnat(start):  # bounds are half-open: a step ending where the range starts is not in it
        mask &= (last > start) | (first >= start)
    if not np.isnat(end):
        mask &= first <= end
    inside = _span(mask)
    if inside is None:
        times = ", ".join(np.datetime_as_string(coordinate.values[:5], unit="s"))
        raise RequestValidationError(
            f"No time step of granule {granule_id} falls in the requested time range (its times: {times}"
            + (", ..." if coordinate.size > 5 else "") + ")."
        )
    return {axes.time: inside}


def _naive(moment: datetime) -> np.datetime64:
    """UTC as numpy's naive datetime64 (decoded CF times are naive UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return np.datetime64(moment, "ns")


def dimension_ranges(
    ds: xr.Dataset, axes: Axes, subsets: Sequence[DimensionRange], granule_id: str
) -> dict[str, slice]:
    """Index ranges for subset=<dim>(min:max): by the dimension's coordinate values, or its indexes."""
    ranges: dict[str, slice] = {}
    dims = [str(dim) for dim in ds.dims]
    for subset in subsets:
        if subset.name not in ds.dims:
            raise RequestValidationError(
                f'Granule {granule_id} has no dimension named "{subset.name}" (its dimensions: {", ".join(dims)}).'
            )
        if subset.name == axes.time:
            raise RequestValidationError(
                f'Subset the time dimension with dates, as time("start":"end"), not numbers ({subset.name}).'
            )
        values = ds[subset.name].values if subset.name in ds.variables else np.arange(ds.sizes[subset.name])
        low = -math.inf if subset.low is None else subset.low
        high = math.inf if subset.high is None else subset.high
        inside = _span((values >= low - _EDGE) & (values <= high + _EDGE))
        if inside is None:
            raise RequestValidationError(
                f"The {subset.name} subset {subset.low}:{subset.high} selects nothing of granule {granule_id}, "
                f"whose {subset.name} runs from {values.min():g} to {values.max():g}."
            )
        _intersect(ranges, subset.name, inside)
    return ranges


def apply_ranges(ds: xr.Dataset, *range_sets: dict[str, slice]) -> xr.Dataset:
    """One isel for every selection; two selections on one dimension keep their overlap."""
    ranges: dict[str, slice] = {}
    for range_set in range_sets:
        for dim, span in range_set.items():
            _intersect(ranges, dim, span)
    for dim, span in ranges.items():
        if span.stop <= span.start:
            raise RequestValidationError(f"The requested subsets of {dim} do not overlap: nothing is left.")
    return ds.isel(ranges) if ranges else ds
