"""Write regridded variables as CF NetCDF-4, laid out as Harmony's swath projector does (the seed, In [34]).

time, y, x coordinate variables; one grid-mapping variable named after its CF grid_mapping_name
(e.g. lambert_cylindrical_equal_area); each variable (time, y, x) in its own dtype with its
_FillValue, packing and other attributes kept and `grid_mapping` set. Written with h5py in
netCDF-C's layout (see source.py for why not netCDF4-python). Blocking: worker threads.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np
import pyproj

from transformers.swath.regrid import Grid
from transformers.swath.source import Swath

_CHUNK = 512


def write_netcdf(swath: Swath, grid: Grid, values: Mapping[str, np.ndarray], path: Path, history: str) -> None:
    crs = pyproj.CRS.from_wkt(grid.crs.to_wkt())
    cf = crs.to_cf()
    mapping_name = str(cf.get("grid_mapping_name") or "crs")
    # Creation order tracked, as netCDF-C does, so readers list variables and attributes as written.
    with h5py.File(path, "w", track_order=True) as nc:
        _set(nc, {**{k: v for k, v in swath.attrs.items() if k != "history"},
                  "Conventions": "CF-1.7", "history": _history(swath.attrs.get("history"), history)})
        dims: list[str] = []
        if swath.time is not None:
            time = nc.create_dataset("time", data=swath.time.data, track_order=True)
            time.make_scale("time")
            _set(time, swath.time.attrs)
            dims.append("time")
        for name, centres in (("y", grid.ys), ("x", grid.xs)):
            axis = nc.create_dataset(name, data=centres, track_order=True)
            axis.make_scale(name)
            _set(axis, _axis_attrs(name, crs))
            dims.append(name)
        mapping = nc.create_dataset(mapping_name, data=np.int32(0), track_order=True)
        _set(mapping, {**cf, "spatial_ref": cf.get("crs_wkt", crs.to_wkt()), "GeoTransform": _geotransform(grid)})
        for variable in swath.variables:
            data = values[variable.name]
            if swath.time is not None:
                data = data[None]
            chunks = (1,) * (data.ndim - 2) + (min(grid.height, _CHUNK), min(grid.width, _CHUNK))
            dataset = nc.create_dataset(
                variable.name, data=data, chunks=chunks, compression="gzip", compression_opts=1,
                shuffle=data.dtype.itemsize > 1, fillvalue=variable.output_fill, track_order=True,
            )
            for index, dim in enumerate(dims):
                dataset.dims[index].attach_scale(nc[dim])
            attrs: dict[str, object] = {"_FillValue": variable.output_fill}
            attrs.update((k, v) for k, v in variable.attrs.items() if k not in ("_FillValue", "grid_mapping"))
            attrs["grid_mapping"] = mapping_name
            _set(dataset, attrs)


def _axis_attrs(name: str, crs: pyproj.CRS) -> dict[str, object]:
    if crs.is_geographic:
        if name == "x":
            return {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east"}
        return {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north"}
    unit = crs.axis_info[0].unit_name if crs.axis_info else "metre"
    return {
        "standard_name": f"projection_{name}_coordinate",
        "long_name": f"{name} coordinate of projection",
        "units": "m" if unit in ("metre", "meter") else unit,
    }


def _geotransform(grid: Grid) -> str:
    """GDAL's netCDF driver reads the grid from this exactly (instead of from the centres)."""
    t = grid.transform
    return " ".join(repr(float(value)) for value in (t.c, t.a, t.b, t.f, t.d, t.e))


def _history(previous: object, line: str) -> str:
    if isinstance(previous, bytes):
        previous = previous.decode("utf-8", "replace")
    return f"{previous}\n{line}" if previous else line


def _set(node: h5py.HLObject, attrs: Mapping[str, object]) -> None:
    for key, value in attrs.items():
        if isinstance(value, str):
            value = np.bytes_(value)  # fixed-length: netCDF text (NC_CHAR), as netCDF-C writes it
        elif isinstance(value, (list, tuple)):
            value = np.asarray(value, dtype=np.float64)
        node.attrs[key] = value
