"""Write regridded variables as a Cloud Optimized GeoTIFF: one band per variable, named by its description.

A GeoTIFF holds one nodata value for all bands, but a swath's variables each have their own
fill value: when they differ, the swath's footprint is kept as the dataset mask instead, and
each band's fill value is a band tag (_FillValue). Packing becomes GDAL's scale and offset.
Blocking: worker threads.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import rasterio

from transformers.swath.regrid import Grid
from transformers.swath.source import Swath

_TILE = 512


def write_cog(swath: Swath, grid: Grid, values: Mapping[str, np.ndarray], path: Path) -> None:
    variables = swath.variables
    stack = np.stack([values[v.name] for v in variables])
    fills = {v.output_fill.item() for v in variables}
    shared_fill = fills.pop() if len(fills) == 1 else None
    profile = {
        "driver": "COG", "width": grid.width, "height": grid.height, "count": len(variables),
        "dtype": stack.dtype, "crs": grid.crs, "transform": grid.transform,
        "compress": "DEFLATE", "blocksize": _TILE, "overview_resampling": "NEAREST",
    }
    if shared_fill is not None:
        profile["nodata"] = shared_fill
    # No PAM: nothing may leave a .aux.xml sidecar beside the output.
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(path, "w", **profile) as dst:
        dst.write(stack)
        if shared_fill is None:
            outside = np.all([_is_fill(values[v.name], v.output_fill) for v in variables], axis=0)
            dst.write_mask(np.where(outside, np.uint8(0), np.uint8(255)))
        dst.scales = [_number(v.attrs.get("scale_factor"), 1.0) for v in variables]
        dst.offsets = [_number(v.attrs.get("add_offset"), 0.0) for v in variables]
        for band, variable in enumerate(variables, start=1):
            dst.set_band_description(band, variable.name)
            tags = {"_FillValue": str(variable.output_fill.item())}
            long_name = variable.attrs.get("long_name")
            if long_name is not None:
                tags["long_name"] = long_name.decode() if isinstance(long_name, bytes) else str(long_name)
            dst.update_tags(band, **tags)


def _is_fill(plane: np.ndarray, fill: np.generic | np.ndarray) -> np.ndarray:
    return np.isnan(plane) if isinstance(fill, np.floating) and np.isnan(fill) else plane == fill


def _number(value: object, default: float) -> float:
    if value is None:
        return default
    return float(np.asarray(value).reshape(-1)[0])
