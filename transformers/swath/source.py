"""Read a Level 2 swath from a NetCDF-4 file: 2-D lat/lon, the variables on them, time and attributes.

Read with h5py, not netCDF4-python: the latter releases the GIL into netCDF-C, which is not
thread-safe, and transformers run on several threads (other families too, in one test process).
h5py serializes its own HDF5 calls. Blocking: callers run it on worker threads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from geomesh.errors import TransformError
from transformers.failures import unprocessable

# HDF5 and netCDF-C bookkeeping attributes: not the data's own metadata.
_INTERNAL_ATTRIBUTES = {"DIMENSION_LIST", "REFERENCE_LIST", "CLASS", "NAME", "_Netcdf4Dimid", "_Netcdf4Coordinates"}
_LATITUDE_NAMES = ("lat", "latitude", "Latitude")
_LONGITUDE_NAMES = ("lon", "longitude", "Longitude")


@dataclass(frozen=True)
class SwathVariable:
    name: str
    data: np.ndarray  # (along, across), packed as stored
    attrs: Mapping[str, object]  # as stored, bookkeeping and `coordinates` left out

    @property
    def fill_value(self) -> object | None:
        return self.attrs.get("_FillValue")

    @property
    def output_fill(self) -> np.generic | np.ndarray:
        """What fills regridded pixels the swath does not reach: its _FillValue, else NaN or 0.

        The _FillValue in the variable's dtype as stored: a 1-element array when the file holds it as one
        (netCDF-C writes it so), else a scalar.
        """
        if self.fill_value is not None:
            return np.asarray(self.fill_value).astype(self.data.dtype)[()]
        return self.data.dtype.type(np.nan if np.issubdtype(self.data.dtype, np.floating) else 0)


@dataclass(frozen=True)
class Swath:
    lat: np.ndarray  # (along, across) degrees north
    lon: np.ndarray  # (along, across) degrees east
    variables: list[SwathVariable]
    time: SwathVariable | None = None
    attrs: Mapping[str, object] = field(default_factory=dict)


def read_swath(path: Path, granule_id: str) -> Swath:
    """Every 2-D variable on the swath's lat/lon grid, with its attributes; TransformError if there is none."""
    try:
        with h5py.File(path, "r") as nc:
            lat_name, lon_name = _geolocation_names(nc, granule_id)
            lat, lon = np.asarray(nc[lat_name][()], dtype=np.float64), np.asarray(nc[lon_name][()], dtype=np.float64)
            if lat.ndim != 2 or lat.shape != lon.shape:
                raise TransformError(
                    f"Granule {granule_id} is not a swath: {lat_name} and {lon_name} must be 2-D arrays of one shape"
                )
            variables = [
                SwathVariable(name, dataset[()], _attrs(dataset))
                for name, dataset in nc.items()
                if isinstance(dataset, h5py.Dataset) and name not in (lat_name, lon_name)
                and dataset.shape == lat.shape and not _is_dimension(dataset)
            ]
            time = nc.get("time")
            time_variable = (
                SwathVariable("time", np.atleast_1d(time[()]), _attrs(time))
                if isinstance(time, h5py.Dataset) and time.ndim <= 1 and time.size == 1 else None
            )
            attrs = _attrs(nc)
    except OSError as error:
        raise unprocessable(granule_id, "it could not be read as NetCDF-4 (HDF5)", error, path) from error
    if not variables:
        raise TransformError(f"Granule {granule_id} has no variables on its lat/lon swath to regrid.")
    return Swath(lat=lat, lon=lon, variables=variables, time=time_variable, attrs=attrs)


def _geolocation_names(nc: h5py.File, granule_id: str) -> tuple[str, str]:
    """lat and lon as the variables' CF `coordinates` attribute names them, else by the usual names."""
    for dataset in nc.values():
        if isinstance(dataset, h5py.Dataset) and "coordinates" in dataset.attrs:
            names = _text(dataset.attrs["coordinates"]).split()
            lat = next((n for n in names if n in nc and _text(nc[n].attrs.get("units", "")).startswith("degrees_n")), None)
            lon = next((n for n in names if n in nc and _text(nc[n].attrs.get("units", "")).startswith("degrees_e")), None)
            if lat and lon:
                return lat, lon
    lat = next((n for n in _LATITUDE_NAMES if n in nc), None)
    lon = next((n for n in _LONGITUDE_NAMES if n in nc), None)
    if lat is None or lon is None:
        raise TransformError(f"Granule {granule_id} has no 2-D latitude and longitude to regrid its swath with.")
    return lat, lon


def _is_dimension(dataset: h5py.Dataset) -> bool:
    return _text(dataset.attrs.get("CLASS", b"")) == "DIMENSION_SCALE"


def _attrs(node: h5py.HLObject) -> dict[str, object]:
    return {
        key: value for key, value in node.attrs.items()
        if key not in _INTERNAL_ATTRIBUTES and key != "coordinates" and not key.startswith("_NC")
    }


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        return _text(value.item())
    return str(value)
