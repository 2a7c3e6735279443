"""The demo's second collection: ATL08 v002 (C1229246405-NSIDC_TS1), answered by direct download.

The seed notebook requests this collection with no operation, and Harmony answers with each
granule's own data link. No service in catalog/services.yml handles it, so geomesh answers the
same way, with links to small HDF5 files that geomesh itself serves under /data/.

Where the facts in atl08.csv come from (the seed notebook, In [14] to In [16]):
- file names and date folders: the full href list printed in In [15], in its order;
- granule ids: the `title` of each link in In [14]'s pprint, matched to its href (the pprint
  lists the links in the same order as In [15]), and In [16] for the first granule. The
  notebook's copy of In [14] is cut short: the ids of the 2nd to 22nd files are not shown
  anywhere, and CMR ids do not follow file order, so they cannot be derived. Those rows keep
  an empty id and are left out of the catalog rather than given made-up ids.

What the files hold is ours: a few hundred land segments per beam along a plausible track,
in ATL08's layout, so that clients can open them like the real thing.
"""

from __future__ import annotations

import csv
import importlib.resources
import os
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import h5py
import numpy as np

from catalog.models import CollectionRecord, GranuleRecord, LinkRecord

COLLECTION_ID = "C1229246405-NSIDC_TS1"
MEDIA_TYPE = "application/x-hdf5"
BEAMS = ("gt1l", "gt1r", "gt2l", "gt2r", "gt3l", "gt3r")
SEGMENTS_PER_BEAM = 200

# A granule is one of the 14 regions an orbit is cut into; the seed's files start 325 s apart
# at the closest, so 5 minutes keeps one orbit's granules from overlapping in time.
GRANULE_DURATION = timedelta(minutes=5)
# delta_time counts seconds from the ATLAS SDP epoch (no leap second fell in 2018).
ATLAS_EPOCH = datetime(2018, 1, 1, tzinfo=UTC)
FILL = np.float32(3.4028235e38)  # ATL08's fill value for heights

# Latitudes each ICESat-2 granule region runs between, in flight order. Regions 4 and 11 cross
# a polar cap (the track turns back at 88 degrees).
_REGION_TRACK: dict[int, tuple[float, float]] = {
    1: (0.0, 27.0), 2: (27.0, 59.5), 3: (59.5, 80.0), 4: (80.0, 80.0), 5: (80.0, 59.5),
    6: (59.5, 27.0), 7: (27.0, 0.0), 8: (0.0, -27.0), 9: (-27.0, -50.0), 10: (-50.0, -79.0),
    11: (-79.0, -79.0), 12: (-79.0, -50.0), 13: (-50.0, -27.0), 14: (-27.0, 0.0),
}
_TURN_LATITUDE = 88.0


@dataclass(frozen=True)
class Atl08Granule:
    """One row of atl08.csv: ATL08_<yyyymmddhhmmss>_<rgt:4><cycle:2><region:2>_002_01.h5."""

    id: str
    file_name: str
    date_folder: str  # the DAAC's folder, e.g. 2018.10.14

    @property
    def time_start(self) -> datetime:
        return datetime.strptime(self.file_name[6:20], "%Y%m%d%H%M%S").replace(tzinfo=UTC)

    @property
    def time_end(self) -> datetime:
        return self.time_start + GRANULE_DURATION

    @property
    def rgt(self) -> int:
        return int(self.file_name[21:25])

    @property
    def cycle(self) -> int:
        return int(self.file_name[25:27])

    @property
    def region(self) -> int:
        return int(self.file_name[27:29])

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """The region's latitude band over every longitude.

        Where along the equator a reference ground track runs is not in the seed, so the box
        spans all longitudes: a search can then only find too many granules, never too few.
        """
        start, end = _REGION_TRACK[self.region]
        south, north = min(start, end), max(start, end)
        if start == end:  # a polar cap
            south, north = (start, 90.0) if start > 0 else (-90.0, start)
        return (-180.0, south, 180.0, north)


def load_rows() -> list[Atl08Granule]:
    """Every file the seed lists (119), in its order; `id` is empty where the seed hides it."""
    text = importlib.resources.files("catalog.demo").joinpath("atl08.csv").read_text()
    return [Atl08Granule(r["id"], r["file_name"], r["date_folder"]) for r in csv.DictReader(text.splitlines())]


def load_granules() -> list[Atl08Granule]:
    """The granules the demo catalog serves: the seed's files whose granule id it shows."""
    return [row for row in load_rows() if row.id]


def granule_path(data_dir: Path, granule: Atl08Granule) -> Path:
    return data_dir / "granules" / COLLECTION_ID / granule.file_name


def data_href(granule: Atl08Granule) -> str:
    # Root-relative /data/ links mean "served by this geomesh from its data folder".
    return f"/data/granules/{COLLECTION_ID}/{granule.file_name}"


def _track_latitudes(region: int, n: int) -> np.ndarray:
    start, end = _REGION_TRACK[region]
    if start != end:
        return np.linspace(start, end, n)
    turn = _TURN_LATITUDE if start > 0 else -_TURN_LATITUDE
    return turn - np.abs(np.linspace(-1.0, 1.0, n)) * (turn - start)


def _beam_segments(granule: Atl08Granule, rng: np.random.Generator, lon0: float, beam_index: int) -> dict[str, np.ndarray]:
    n = SEGMENTS_PER_BEAM
    lat = _track_latitudes(granule.region, n)
    # Beam pairs are ~3.3 km apart, the two beams of a pair ~90 m; the track drifts west
    # as the Earth turns under it.
    across = (beam_index // 2) * 0.03 + (beam_index % 2) * 0.001
    lon = (lon0 + across - np.linspace(0.0, 1.5, n) + 180.0) % 360.0 - 180.0
    seconds = (granule.time_start - ATLAS_EPOCH).total_seconds()
    delta_time = seconds + np.linspace(0.0, GRANULE_DURATION.total_seconds(), n)
    terrain = (300.0 + np.cumsum(rng.normal(0.0, 8.0, n))).astype(np.float32)
    canopy = rng.gamma(2.0, 6.0, n).astype(np.float32)
    canopy[rng.random(n) < 0.3] = FILL  # bare ground: ATL08 leaves no canopy height
    return {
        "latitude": lat.astype(np.float32),
        "longitude": lon.astype(np.float32),
        "delta_time": delta_time,
        "canopy/h_canopy": canopy,
        "terrain/h_te_best_fit": terrain,
    }


def _new_file(path: Path) -> h5py.File:
    """A new HDF5 file in the compact newest format whose root stores no creation time."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    return h5py.File(h5py.h5f.create(os.fsencode(path), h5py.h5f.ACC_TRUNC, fapl=fapl, fcpl=fcpl))


def _new_group(parent: h5py.Group, name: str) -> h5py.Group:
    # Without creation times a regenerated file has the same bytes (h5py's datasets already omit them).
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    return h5py.Group(h5py.h5g.create(parent.id, name.encode(), gcpl=gcpl))


def _new_dataset(parent: h5py.Group, name: str, values: np.ndarray) -> h5py.Dataset:
    """One gzip-compressed chunk; the low-level calls cost half of h5py's create_dataset on tiny arrays."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_obj_track_times(False)
    dcpl.set_chunk(values.shape)
    dcpl.set_shuffle()
    dcpl.set_deflate(6)
    space = h5py.h5s.create_simple(values.shape)
    dataset = h5py.h5d.create(parent.id, name.encode(), h5py.h5t.py_create(values.dtype), space, dcpl=dcpl)
    dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, values)
    return h5py.Dataset(dataset)


def write_granule(granule: Atl08Granule, path: Path) -> Path:
    """Write one granule's HDF5 file (via a temporary name, so a crash leaves no half file)."""
    # Seeded by the file name: a regenerated file holds the same numbers.
    rng = np.random.default_rng(zlib.crc32(granule.file_name.encode()))
    lon0 = float(rng.uniform(-180.0, 180.0))
    west, south, east, north = granule.bbox
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with _new_file(tmp) as h5:
        h5.attrs.update({
            "short_name": "ATL08", "level": "L3A",
            "title": "ATLAS/ICESat-2 L3A Land and Vegetation Height",
            "description": "geomesh demonstration data in ATL08's layout: synthetic heights along a plausible track",
            "granule_id": granule.id, "producer_granule_id": granule.file_name,
            "time_coverage_start": granule.time_start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "time_coverage_end": granule.time_end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "geospatial_lat_min": south, "geospatial_lat_max": north,
            "geospatial_lon_min": west, "geospatial_lon_max": east,
        })
        orbit = _new_group(h5, "orbit_info")
        orbit["rgt"] = np.array([granule.rgt], dtype=np.int16)
        orbit["cycle_number"] = np.array([granule.cycle], dtype=np.int8)
        for index, beam in enumerate(BEAMS):
            segments = _new_group(_new_group(h5, beam), "land_segments")
            subgroups = {"canopy": _new_group(segments, "canopy"), "terrain": _new_group(segments, "terrain")}
            for name, values in _beam_segments(granule, rng, lon0, index).items():
                folder, _, leaf = name.rpartition("/")
                parent = subgroups[folder] if folder else segments
                dataset = _new_dataset(parent, leaf, values)
                if leaf.startswith("h_"):
                    dataset.attrs["_FillValue"] = FILL
    os.replace(tmp, path)
    return path


_SUMMARY = (
    "Demonstration data served offline by geomesh under the ids of NASA's ATL08 v002 test collection "
    "(CMR UAT). No service transforms it: requests are answered with direct download links to files "
    "geomesh serves itself. Each granule is a small HDF5 file in ATL08's layout (six beams of land "
    "segments with latitude, longitude, delta_time, canopy and terrain heights) holding synthetic values "
    "along a plausible track through the granule's latitude band."
)


def build_collection(data_dir: Path, granules: list[Atl08Granule]) -> CollectionRecord:
    """Write the granules' files under data_dir and return the collection that lists them."""
    records = []
    for granule in granules:
        write_granule(granule, granule_path(data_dir, granule))
        records.append(GranuleRecord(
            id=granule.id, name=granule.file_name,
            time_start=granule.time_start, time_end=granule.time_end, bbox=granule.bbox,
            links=[LinkRecord(href=data_href(granule), type=MEDIA_TYPE, title=granule.id)],
        ))
    return CollectionRecord(
        id=COLLECTION_ID, short_name="ATL08", version="002",
        title="ATLAS/ICESat-2 L3A Land and Vegetation Height V002", summary=_SUMMARY, provider="NSIDC_TS1",
        time_start=datetime(2018, 10, 13, tzinfo=UTC), time_end=None,
        bbox=(-180.0, -90.0, 180.0, 90.0), granules=records,
    )
