"""Output formats of the netcdf transformer: NetCDF4 (CF), Zarr (one zip file) and a Cloud Optimized GeoTIFF.

Zarr is a folder of many small files, but a transformer streams one file per granule, so the
store is delivered zipped (`.zarr.zip`, stored uncompressed: its chunks are compressed already),
with its entries at the zip's root and consolidated metadata, which `zarr.storage.ZipStore` and
`xarray.open_zarr` read as it is. The store is Zarr format 2, as Harmony's netcdf-to-zarr writes.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import xarray as xr

from geomesh.errors import RequestValidationError

NETCDF4 = "application/x-netcdf4"
ZARR = "application/x-zarr"
TIFF = "image/tiff"
# The first is the default.
EXTENSIONS: dict[str, str] = {NETCDF4: ".nc4", TIFF: ".tif", ZARR: ".zarr.zip"}
# Granule names often end with the source file's extension; Harmony drops it from output names.
_SOURCE_SUFFIX = re.compile(r"\.(nc4?|h5|he5|hdf5?|zarr|tiff?)$", re.IGNORECASE)
_COMPLEVEL = 4
_COG_TILE = 512
# Encoding keys worth carrying from the source to NetCDF4 and Zarr (the rest are the reader's notes).
_KEEP_ENCODING = ("dtype", "units", "calendar", "grid_mapping", "bounds", "coordinates")


def output_file_name(
    granule_name: str, variables: Sequence[str], subsetted: bool, media_type: str, regridded: bool = False
) -> str:
    """Harmony style, as the gdal family names its files: <granule>[_<variable>][_regridded][_subsetted].<ext>."""
    name = _SOURCE_SUFFIX.sub("", granule_name) or "output"
    if len(variables) == 1:
        name += "_" + re.sub(r"[^\w.-]+", "_", variables[0].rsplit("/", 1)[-1]).strip("_")
    if regridded:
        name += "_regridded"
    if subsetted:
        name += "_subsetted"
    return name + EXTENSIONS[media_type]


def with_history(ds: xr.Dataset, operations: str) -> xr.Dataset:
    """The global attributes kept, with a CF history line for this run on top of the source's."""
    line = f"{datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')} geomesh netcdf transformer: {operations}"
    previous = str(ds.attrs.get("history", "")).strip()
    ds.attrs["history"] = f"{line}\n{previous}" if previous else line
    ds.attrs.setdefault("Conventions", "CF-1.8")  # what the grid mapping and coordinates follow
    return ds


def _chunks(variable: xr.Variable) -> tuple[int, ...] | None:
    """The source's chunk shape, clipped to the (subset) variable's shape."""
    chunks = variable.encoding.get("chunksizes") or variable.encoding.get("chunks")
    if not chunks or len(chunks) != variable.ndim:
        return None
    return tuple(max(1, min(int(c), n)) for c, n in zip(chunks, variable.shape, strict=True))


def _encoding(ds: xr.Dataset, zarr: bool) -> dict[str, dict[str, object]]:
    """Per variable: what to keep of the source's encoding, compression, chunks; no fill on coordinates."""
    encoding: dict[str, dict[str, object]] = {}
    for name, variable in ds.variables.items():
        kept = {k: v for k, v in variable.encoding.items() if k in _KEEP_ENCODING}
        if zarr:
            kept.pop("coordinates", None)  # xarray's zarr backend writes it from the dataset itself
        if "_FillValue" not in variable.attrs:
            kept["_FillValue"] = None  # CF: coordinates have none, and xarray would add NaN to floats
        numeric = variable.dtype.kind in "iufb"
        chunks = _chunks(variable)
        if zarr:
            if chunks and variable.ndim:
                kept["chunks"] = chunks
        elif numeric and variable.ndim:
            kept.update(zlib=True, complevel=_COMPLEVEL, shuffle=True)
            if chunks:
                kept["chunksizes"] = chunks
        encoding[str(name)] = kept
    return encoding


def write_netcdf(ds: xr.Dataset, path: Path) -> None:
    """CF NetCDF4, every numeric variable zlib-compressed in the source's chunks."""
    ds.to_netcdf(path, engine="netcdf4", format="NETCDF4", encoding=_encoding(ds, zarr=False))


def write_zarr_zip(ds: xr.Dataset, path: Path) -> None:
    """A Zarr v2 store with consolidated metadata, zipped into `path` with its entries at the root."""
    folder = Path(tempfile.mkdtemp(prefix="geomesh-zarr-", dir=path.parent))
    try:
        for variable in ds.variables.values():
            variable.encoding.pop("chunks", None)
            variable.encoding.pop("preferred_chunks", None)
        ds.to_zarr(folder, mode="w", consolidated=True, zarr_format=2, encoding=_encoding(ds, zarr=True))
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for file in sorted(folder.rglob("*")):
                if file.is_file():
                    archive.write(file, file.relative_to(folder).as_posix())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_cog(ds: xr.Dataset, path: Path, x_dim: str, y_dim: str) -> None:
    """A Cloud Optimized GeoTIFF: one band per gridded variable, named by its band description."""
    bands = []
    for name, variable in ds.data_vars.items():
        if not {x_dim, y_dim} <= set(variable.dims):
            continue
        extra = {dim: size for dim, size in variable.sizes.items() if dim not in (x_dim, y_dim) and size != 1}
        if extra:
            described = ", ".join(f"{dim}={size}" for dim, size in extra.items())
            raise RequestValidationError(
                f"A GeoTIFF band is 2-D but {name} also has {described}: subset those dimensions to one value "
                "each, or ask for application/x-netcdf4 or application/x-zarr."
            )
        bands.append(variable.squeeze(drop=True).transpose(y_dim, x_dim).drop_vars(
            [c for c in variable.coords if c not in (x_dim, y_dim)], errors="ignore"
        ))
    if not bands:
        raise RequestValidationError("None of the selected variables is on the latitude/longitude grid: no GeoTIFF band to write.")
    fills = {_scalar(band.attrs.get("_FillValue")) for band in bands}
    dtype = np.result_type(*(band.dtype for band in bands))
    stacked = xr.concat([band.astype(dtype) for band in bands], dim="band", coords="minimal", compat="override")
    stacked = stacked.assign_coords(band=np.arange(1, len(bands) + 1))
    if stacked[y_dim].size > 1 and stacked[y_dim].values[0] < stacked[y_dim].values[-1]:
        stacked = stacked.isel({y_dim: slice(None, None, -1)})  # north-up
    stacked.attrs = {"long_name": tuple(str(band.name) for band in bands)}
    stacked.encoding = {}
    stacked = stacked.rio.set_spatial_dims(x_dim=x_dim, y_dim=y_dim).rio.write_crs(ds.rio.crs)
    fill = fills.pop() if len(fills) == 1 else None
    if fill is not None:
        stacked = stacked.rio.write_nodata(fill, encoded=False)
    tags = {key: str(value) for key, value in ds.attrs.items() if isinstance(value, str | int | float)}
    stacked.rio.to_raster(
        path, driver="COG", compress="DEFLATE", blocksize=_COG_TILE, overview_resampling="NEAREST", tags=tags
    )


def _scalar(value: object) -> float | None:
    if value is None:
        return None
    return np.asarray(value).item()
