"""The demo's NetCDF collection: harmony_example v2 (C1234088182-EEDTEST), for the netcdf transformer.

Where the facts come from:
- the collection (short name, version, title, summary, start time): CMR UAT's collections.json
  answer for C1234088182-EEDTEST (recorded in ../shared/fixtures/cmr-uat);
- the variables (concept ids, names, long names, definitions, dimensions): CMR UAT's UMM-Var
  answer for the collection's four variables, recorded there too.

CMR's granules of this collection were not recorded, so the granules are ours, in the pattern
of v1 (catalog/demo/harmony_example.csv): the global slot (00:00-01:59:59 UTC) of each of the 16
days, named like v1's (`DDD_SS_<hex colour>_global`) and painted in the same day's colour over
land. Their ids are made up in CMR's style: CMR numbers every concept from one sequence, the
collection is 1234088182 and its variables 1234088187-90, so ours start after those, at
G1234088191-EEDTEST; they are not CMR's.

Each granule is a CF-1.8 NetCDF4 file: dimensions time (1), lat (720, south to north) and lon
(1440, west to east) on a 0.25 degree grid (CMR's UMM-Var says 0.1 degree; a quarter degree
keeps 16 files quick to write), and four uint8 variables red_var, green_var, blue_var and
alpha_var (time, lat, lon), 0 over sea (_FillValue) and 1-255 over land, chunked 1x180x360 (16 chunks per variable,
as CMR's summary says of the real files) and zlib-compressed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import netCDF4
import numpy as np
import pyproj

from catalog.demo import generate
from catalog.models import (
    CollectionRecord,
    GranuleRecord,
    LinkRecord,
    VariableRecord,
    relative_href,
)

COLLECTION_ID = "C1234088182-EEDTEST"
MEDIA_TYPE = "application/x-netcdf4"
FIRST_GRANULE_NUMBER = 1234088191
PIXEL_DEG = 0.25
FILL = np.uint8(0)
CHUNKS = (1, 180, 360)
TIME_UNITS = "hours since 2020-01-01 00:00:00"
_GLOBAL = (-180.0, -90.0, 180.0, 90.0)

# UMM-Var of the collection's variables (CMR UAT), in band order.
VARIABLES = (
    VariableRecord(id="V1234088187-EEDTEST", name="red_var", long_name="Red Channel",
                   description="Red channel value", dimensions=["Latitude", "Longitude"]),
    VariableRecord(id="V1234088188-EEDTEST", name="green_var", long_name="Green Channel",
                   description="Green channel value", dimensions=["Latitude", "Longitude"]),
    VariableRecord(id="V1234088189-EEDTEST", name="blue_var", long_name="Blue Channel",
                   description="Blue channel value", dimensions=["Latitude", "Longitude"]),
    VariableRecord(id="V1234088190-EEDTEST", name="alpha_var", long_name="Alpha Channel",
                   description="Alpha channel value", dimensions=["Latitude", "Longitude"]),
)

# CMR's summary, with its spacing.
_SUMMARY = (
    "A collection to use in testing Harmony whose data have the following attributes, useful in testing current"
    "    and future Harmony work, ensuring that results come back correctly, and that metadata is preserved."
    "    1. Granule data is very small, under 1MB, often well under 1MB    2. Data follows the outlines of the "
    "continents, making visual inspection easy    3. Data follows a consistent gradient, with hue differing "
    "slightly by granule in sequential temporal order from       blue/purple (oldest) to red (newest)    4. Files "
    "have color interpretation set, allowing for color output, if services preserve it    5. Files have 4 "
    "variables / bands    6. Data bands have descriptions set    Differences from v1:    1. Produced via the "
    "NetCDF4 API, with deliberate chunking of 16 chunks per variable    2. File custom metadata renamed to "
    "HarmonyHexColor, set to the central hex value of the file's gradient, and HarmonyHue, set to the numeric hue "
    "(0.0-1.0)    3. Each geographic area is separated to a different month with each sub-file as the same day "
    "of that month    4. File names are improved to have a year-month-day format  "
)
_DEMO_NOTE = (
    "geomesh demonstration data under the ids of NASA's harmony_example v2 collection: the granule ids and "
    "pixels are geomesh's own (the day's colour over land, 0 over sea), not the real files'"
)


@dataclass(frozen=True)
class V2Granule:
    """One granule: v1's global granule of the same day, under an id of ours."""

    id: str
    name: str
    time_start: datetime
    time_end: datetime

    @property
    def hex_color(self) -> str:
        return self.name.split("_")[2]

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        return _GLOBAL


def load_granules() -> list[V2Granule]:
    """16 granules, one a day, in time order (from v1's CSV: its global 00 slots)."""
    days = [g for g in generate.load_granules() if g.name.split("_")[1] == "00" and g.name.endswith("_global")]
    days.sort(key=lambda g: g.time_start)
    return [
        V2Granule(f"G{FIRST_GRANULE_NUMBER + i}-EEDTEST", g.name, g.time_start, g.time_end)
        for i, g in enumerate(days)
    ]


def granule_path(data_dir: Path, granule: V2Granule) -> Path:
    return data_dir / "granules" / COLLECTION_ID / f"{granule.name}.nc"


def _axes() -> tuple[np.ndarray, np.ndarray]:
    """Cell centres: lat south to north, lon west to east."""
    lats = -90.0 + (np.arange(round(180 / PIXEL_DEG)) + 0.5) * PIXEL_DEG
    lons = -180.0 + (np.arange(round(360 / PIXEL_DEG)) + 0.5) * PIXEL_DEG
    return lats, lons


def _shading(lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    """v1's global land shading (0.1 degree, north-up) sampled at our cell centres, south-up."""
    shade = generate._land_shading(_GLOBAL)
    rows = np.clip(((90.0 - lats) / generate.PIXEL_DEG).astype(np.int64), 0, shade.shape[0] - 1)
    cols = np.clip(((lons + 180.0) / generate.PIXEL_DEG).astype(np.int64), 0, shade.shape[1] - 1)
    return shade[rows[:, None], cols[None, :]]


def _hours(moment: datetime) -> float:
    return (moment - datetime(2020, 1, 1, tzinfo=UTC)).total_seconds() / 3600.0


def write_granule(granule: V2Granule, path: Path, shade: np.ndarray, lats: np.ndarray, lons: np.ndarray) -> Path:
    """Write one granule's NetCDF4 file (via a temporary name, so a crash leaves no half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    rgb = [int(granule.hex_color[i:i + 2], 16) for i in (0, 2, 4)]
    with netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
        nc.setncatts({
            "Conventions": "CF-1.8",
            "title": "Harmony Example Data v2",
            "source": "geomesh demo generator (catalog/demo/harmony_example_v2.py)",
            "comment": _DEMO_NOTE,
            "granule_id": granule.id,
            "HARMONY_HEX_COLOR": granule.hex_color,
            "HARMONY_HUE": f"{generate.hue_of(granule.hex_color):.6f}",
            "time_coverage_start": granule.time_start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "time_coverage_end": granule.time_end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        })
        nc.createDimension("time", 1)
        nc.createDimension("lat", lats.size)
        nc.createDimension("lon", lons.size)
        nc.createDimension("nv", 2)
        time = nc.createVariable("time", "f8", ("time",))
        time.setncatts({"standard_name": "time", "long_name": "time", "units": TIME_UNITS,
                        "calendar": "standard", "axis": "T", "bounds": "time_bnds"})
        time[:] = [_hours(granule.time_start)]
        bounds = nc.createVariable("time_bnds", "f8", ("time", "nv"))
        # CF bounds are half-open, [00:00, 02:00); CMR's inclusive end is the last second, 01:59:59.
        bounds[:] = [[_hours(granule.time_start), _hours(granule.time_end + timedelta(seconds=1))]]
        for name, values, standard, units, axis in (
            ("lat", lats, "latitude", "degrees_north", "Y"), ("lon", lons, "longitude", "degrees_east", "X")
        ):
            variable = nc.createVariable(name, "f8", (name,))
            variable.setncatts({"standard_name": standard, "long_name": standard, "units": units, "axis": axis})
            variable[:] = values
        # WGS 84 in CF terms, with its WKT, so that readers find EPSG:4326 itself.
        nc.createVariable("crs", "i4").setncatts(pyproj.CRS.from_epsg(4326).to_cf())
        land = shade > 0
        for index, record in enumerate(VARIABLES):
            # zlib level 1: all 16 files in ~0.35 s against ~0.55 s at level 4, for a fifth more bytes.
            variable = nc.createVariable(
                record.name, "u1", ("time", "lat", "lon"), zlib=True, complevel=1,
                chunksizes=CHUNKS, fill_value=FILL,
            )
            variable.setncatts({"long_name": record.long_name, "description": record.description,
                                "grid_mapping": "crs", "valid_range": np.array([1, 255], dtype=np.uint8)})
            # Land is at least 1, so that 0 (the fill value) means sea in every variable; alpha is opaque.
            colour = np.maximum(shade * rgb[index], 1) if index < 3 else np.uint8(255)
            variable[0] = np.where(land, colour, 0).astype(np.uint8)
    os.replace(tmp, path)
    return path


def build_collection(data_dir: Path, granules: list[V2Granule]) -> CollectionRecord:
    """Write the granules' files under data_dir and return the collection that lists them."""
    lats, lons = _axes()
    shade = _shading(lats, lons) if granules else None
    records = []
    for granule in granules:
        assert shade is not None  # None only when there are no granules
        path = write_granule(granule, granule_path(data_dir, granule), shade, lats, lons)
        records.append(GranuleRecord(
            id=granule.id, name=granule.name, time_start=granule.time_start, time_end=granule.time_end,
            bbox=granule.bbox, links=[LinkRecord(href=relative_href(path, data_dir), type=MEDIA_TYPE, title=granule.id)],
        ))
    return CollectionRecord(
        id=COLLECTION_ID, short_name="harmony_example", version="2",
        title="Harmony Example Data v2", summary=_SUMMARY, provider="EEDTEST",
        time_start=datetime(1970, 6, 26, tzinfo=UTC), time_end=None, bbox=_GLOBAL,
        variables=[v.model_copy(deep=True) for v in VARIABLES], granules=records,
    )
