"""One granule's work without gRPC: read the swath, regrid it, write NetCDF-4 or a COG to a scratch file."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError

from transformers.failures import unprocessable
from transformers.grids import GridSpec
from transformers.serving import Budget, FileOutput
from transformers.sources import DataAccess, Source
from transformers.swath.cf_output import write_netcdf
from transformers.swath.regrid import regrid, swath_grid
from transformers.swath.source import read_swath
from transformers.swath.tiff_output import write_cog

NETCDF = "application/x-netcdf4"
TIFF = "image/tiff"
# The first is the default.
EXTENSIONS: dict[str, str] = {NETCDF: ".nc", TIFF: ".tif"}
# Granule names may end with the source file's extension; Harmony's output names drop it.
_SOURCE_SUFFIX = re.compile(r"\.(nc4?|h5|he5|hdf5?)$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class RegridRequest:
    """One granule's work, in domain terms (the service converts the WorkItem into this)."""

    granule_id: str
    granule_name: str
    source: Source
    media_type: str
    grid: GridSpec = GridSpec()


def regrid_granule(
    request: RegridRequest, access: DataAccess, scratch_dir: Path | None = None, budget: Budget = Budget()
) -> FileOutput:
    """Regrid the granule's swath as asked and write it; the caller streams and deletes the file."""
    with access.local_file(request.source, scratch_dir) as granule_path:
        swath = read_swath(granule_path, request.granule_id)
    grid = swath_grid(swath, request.grid)
    itemsize = max((v.data.dtype.itemsize for v in swath.variables), default=8)
    budget.check(f"granule {request.granule_id}", grid.width, grid.height, len(swath.variables), itemsize)
    descriptor, name = tempfile.mkstemp(prefix="geomesh-swath-", suffix=EXTENSIONS[request.media_type], dir=scratch_dir)
    os.close(descriptor)
    path = Path(name)
    try:
        try:
            values = regrid(swath, grid, request.grid.resampling)
            if request.media_type == NETCDF:
                write_netcdf(swath, grid, values, path, history=f"regridded by geomesh (swath) from {request.granule_name}")
            else:
                write_cog(swath, grid, values, path)
        except (CPLE_BaseError, RasterioError, OSError, ValueError) as error:
            raise unprocessable(
                request.granule_id, f"its swath could not be regridded or written as {request.media_type}", error,
                request.source.href,
            ) from error
    except BaseException:
        path.unlink(missing_ok=True)  # no half-written output is left behind
        raise
    return FileOutput(
        path=path,
        media_type=request.media_type,
        file_name=output_file_name(request.granule_name, request.media_type),
        bbox=grid.footprint,
        size_bytes=path.stat().st_size,
    )


def output_file_name(granule_name: str, media_type: str) -> str:
    """Harmony style, as harmony-service-lib names a swath projector's output: <granule>_regridded.<ext>."""
    return (_SOURCE_SUFFIX.sub("", granule_name) or "output") + "_regridded" + EXTENSIONS[media_type]
