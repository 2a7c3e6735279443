"""The gdal transformer's warp: a WarpedVRT over the pooled source onto a transformers.grids Grid,
so the writers read it in slabs like any other dataset and memory stays flat. Blocking (GDAL):
run on worker threads.
"""

from __future__ import annotations

from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from transformers.grids import Grid


def warped(
    src: DatasetReader, window: Window, grid: Grid, resampling: Resampling, add_alpha: bool = False
) -> WarpedVRT:
    """The source warped onto `grid`; pixels outside `window` are left out (the bbox crop comes first).

    add_alpha carries a source's mask band through the warp (as the VRT's alpha, read as its mask)."""
    options: dict[str, str] = {}
    if (window.col_off, window.row_off, window.width, window.height) != (0, 0, src.width, src.height):
        # A cutline in source pixel coordinates: the bbox crop happens before the warp.
        x0, y0 = window.col_off, window.row_off
        x1, y1 = x0 + window.width, y0 + window.height
        options["cutline"] = f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"
    return WarpedVRT(
        src, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
        resampling=resampling, add_alpha=add_alpha, **options,
    )
