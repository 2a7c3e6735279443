"""The L2 swath demo collection: CMR's recorded facts, and NetCDF-4 swaths holding what the summary describes."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import netCDF4
import numpy as np
import pytest

from catalog.demo import l2_swath
from catalog.demo.generate import generate_demo
from catalog.models import CatalogFile
from tests.cmr_replay import FIXTURES, fixtures_available, load_recordings

RECORDED_ID = "G1233860471-EEDTEST"  # the one granule CMR's recording shows
SEED_ID = "G1233860486-EEDTEST"      # the seed notebook's regrid request
NAME_RE = re.compile(r"^(\d{3})_(\d{2})_(\d{3})_(africa|asia|europe)$")


def _recorded(path: str, field: str) -> dict:
    if not fixtures_available():
        pytest.skip(f"recorded CMR exchanges not found at {FIXTURES}")
    for recording in load_recordings():
        if recording.path == path and (field, l2_swath.COLLECTION_ID) in (recording.form or recording.query):
            return json.loads(recording.body)
    pytest.fail(f"no recording of {path} for {l2_swath.COLLECTION_ID}")


def test_granules_follow_the_recorded_pattern() -> None:
    granules = l2_swath.load_granules()
    assert len(granules) == 48
    assert [g.id for g in granules] == [f"G{1233860471 + i}-EEDTEST" for i in range(48)]
    assert all(NAME_RE.match(g.name) for g in granules) and len({g.name for g in granules}) == 48
    assert [g.time_start for g in granules] == sorted(g.time_start for g in granules)
    by_id = {g.id: g for g in granules}
    assert by_id[SEED_ID].name == "005_00_028_africa" and by_id[SEED_ID].add_offset == 28
    offsets = [g.add_offset for g in granules]
    assert offsets == sorted(offsets) and len(set(offsets)) == 48  # rising with newer granules


def test_the_recorded_granule_is_cmrs() -> None:
    feed = _recorded("/search/granules.json", "collection_concept_id")["feed"]["entry"]
    entry = feed[0]
    granule = next(g for g in l2_swath.load_granules() if g.id == entry["id"])
    assert granule.id == RECORDED_ID
    assert granule.name == entry["title"] == entry["producer_granule_id"]
    assert granule.time_start == datetime.fromisoformat(entry["time_start"])
    assert granule.time_end == datetime.fromisoformat(entry["time_end"])
    south, west, north, east = (float(v) for v in entry["boxes"][0].split())
    lat, lon = l2_swath.geolocation(granule)
    assert l2_swath.bbox_of(lat, lon) == (west, south, east, north)


def test_collection_variables_are_cmrs(tmp_path: Path) -> None:
    collection = l2_swath.build_collection(tmp_path, [])
    recordings = [r for r in load_recordings() if r.path == "/search/variables.umm_json_v1_9_0"] if fixtures_available() else []
    umm = {
        item["meta"]["concept-id"]: item["umm"]
        for recording in recordings
        for item in json.loads(recording.body)["items"]
        if l2_swath.COLLECTION_ID in item["meta"]["associations"].get("collections", [])
    }
    if not umm:
        pytest.skip(f"recorded UMM-Var of {l2_swath.COLLECTION_ID} not found at {FIXTURES}")
    assert {v.id for v in collection.variables} == set(umm)
    for variable in collection.variables:
        assert (variable.name, variable.long_name, variable.description) == (
            umm[variable.id]["Name"], umm[variable.id]["LongName"], umm[variable.id]["Definition"]
        )
    assert (collection.short_name, collection.version, collection.title) == (
        "harmony_example_l2", "1", "Harmony Example L2 Data"
    )


@pytest.fixture(scope="module")
def l2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("l2")
    generate_demo(data_dir, granules=[RECORDED_ID, SEED_ID])
    return data_dir


def test_catalog_lists_the_swaths_with_their_extents(l2_dir: Path) -> None:
    catalog = CatalogFile.model_validate_json((l2_dir / "catalog.json").read_bytes())
    (collection,) = catalog.collections
    assert collection.id == l2_swath.COLLECTION_ID
    assert [g.id for g in collection.granules] == [RECORDED_ID, SEED_ID]
    for record in collection.granules:
        (link,) = record.links
        assert link.type == "application/x-netcdf4" and link.href.endswith(f"/{record.name}.nc")
        with netCDF4.Dataset(l2_dir / link.href) as nc:
            lat, lon = nc["lat"][:], nc["lon"][:]
            assert nc.producer_granule_id == record.name
        west, south, east, north = record.bbox
        assert (west, south, east, north) == pytest.approx((lon.min(), lat.min(), lon.max(), lat.max()), abs=1e-5)


def test_swath_variables_as_the_summary_describes(l2_dir: Path) -> None:
    granule = next(g for g in l2_swath.load_granules() if g.id == SEED_ID)
    with netCDF4.Dataset(l2_swath.granule_path(l2_dir, granule)) as nc:
        nc.set_auto_maskandscale(False)
        assert nc["lat"].dimensions == nc["red_var"].dimensions == ("along_track", "cross_track")
        assert nc["lat"].shape == (500, 500) and nc["lat"].dtype == np.float32
        assert len(nc["time"]) == 1 and nc["time"].units.startswith("seconds since")
        red, green, blue, alpha = (nc[name][:] for name in ("red_var", "green_var", "blue_var", "alpha_var"))
        for name, fill in (("red_var", 127), ("green_var", 255), ("blue_var", 255), ("alpha_var", 0)):
            assert nc[name].dtype == np.uint8 and nc[name].getncattr("_FillValue") == fill
            assert nc[name].coordinates == "lat lon"
        for name in ("green_var", "blue_var"):
            assert (nc[name].scale_factor, nc[name].add_offset) == (2, 28)
        assert "scale_factor" not in nc["red_var"].ncattrs()
        lat, lon = nc["lat"][:], nc["lon"][:]
    # red: 255 on the perimeter (2 px at the sides, 5 at start and stop) and the central 5 px, else nodata.
    edge = np.zeros(red.shape, dtype=bool)
    edge[:5], edge[-5:], edge[:, :2], edge[:, -2:], edge[:, 248:253] = True, True, True, True, True
    assert (red[edge] == 255).all() and (red[~edge] == 127).all()
    land = alpha == 255
    assert set(np.unique(alpha)) == {127, 255} and 0.1 < land.mean() < 0.9
    assert set(np.unique(green[land])) == set(range(1, 17)) and (green[~land] == 255).all()
    assert set(np.unique(blue[~land])) == set(range(1, 17)) and (blue[land] == 255).all()
    # Land where land is: the Sahara, and the Gulf of Guinea is water.
    for (target_lon, target_lat), expected in (((12.0, 24.0), True), ((3.0, 2.0), False)):
        row, col = np.unravel_index(np.hypot(lon - target_lon, lat - target_lat).argmin(), lon.shape)
        assert land[row, col] == expected, (target_lon, target_lat)
