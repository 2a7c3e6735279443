"""The harmony_example v2 demo collection: CMR's facts, our granules, and CF NetCDF4 files that readers open."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import netCDF4
import numpy as np
import pyproj
import pytest

from catalog.demo import generate, harmony_example_v2
from catalog.models import CatalogFile

FIRST = "G1234088191-EEDTEST"


def test_sixteen_days_of_global_granules_named_like_v1() -> None:
    granules = harmony_example_v2.load_granules()
    assert [g.id for g in granules] == [f"G{1234088191 + day}-EEDTEST" for day in range(16)]
    assert granules[0].name == "001_00_7f00ff_global" and granules[-1].name == "016_00_ff0000_global"
    assert granules[0].time_start == datetime(2020, 1, 1, tzinfo=UTC)
    assert granules[-1].time_end == datetime(2020, 1, 16, 1, 59, 59, tzinfo=UTC)
    v1_ids = {g.id for g in generate.load_granules()}
    assert not v1_ids & {g.id for g in granules}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("demo_v2")
    generate.generate_demo(data_dir, granules=[FIRST, "G1234088206-EEDTEST"])
    return data_dir


def test_the_catalog_has_cmrs_collection_and_variables(demo: Path) -> None:
    catalog = CatalogFile.model_validate_json((demo / "catalog.json").read_text())
    (collection,) = catalog.collections
    assert (collection.id, collection.short_name, collection.version) == (harmony_example_v2.COLLECTION_ID, "harmony_example", "2")
    assert collection.title == "Harmony Example Data v2" and collection.provider == "EEDTEST"
    assert collection.summary.startswith("A collection to use in testing Harmony") and "Differences from v1" in collection.summary
    assert collection.time_start == datetime(1970, 6, 26, tzinfo=UTC) and collection.time_end is None
    assert [(v.id, v.name, v.long_name) for v in collection.variables] == [
        ("V1234088187-EEDTEST", "red_var", "Red Channel"),
        ("V1234088188-EEDTEST", "green_var", "Green Channel"),
        ("V1234088189-EEDTEST", "blue_var", "Blue Channel"),
        ("V1234088190-EEDTEST", "alpha_var", "Alpha Channel"),
    ]
    assert [g.id for g in collection.granules] == [FIRST, "G1234088206-EEDTEST"]
    link = collection.granules[0].links[0]
    assert link.type == "application/x-netcdf4" and (demo / link.href).is_file() and link.href.endswith("001_00_7f00ff_global.nc")


def test_a_granule_is_cf_netcdf4_painted_in_its_days_colour(demo: Path) -> None:
    path = demo / "granules" / harmony_example_v2.COLLECTION_ID / "016_00_ff0000_global.nc"
    with netCDF4.Dataset(path) as nc:
        assert nc.data_model == "NETCDF4" and nc.Conventions == "CF-1.8"
        assert nc.HARMONY_HEX_COLOR == "ff0000" and nc.title == "Harmony Example Data v2"
        assert {name: len(dim) for name, dim in nc.dimensions.items()} == {"time": 1, "lat": 720, "lon": 1440, "nv": 2}
        lat, lon = nc["lat"][:], nc["lon"][:]
        assert lat[0] == -89.875 and lat[-1] == 89.875  # south to north
        assert lon[0] == -179.875 and (nc["lat"].units, nc["lon"].standard_name) == ("degrees_north", "longitude")
        assert netCDF4.num2date(nc["time"][0], nc["time"].units) == datetime(2020, 1, 16)
        assert nc["time"].bounds == "time_bnds"
        assert list(nc["time_bnds"][0] - nc["time"][0]) == [0.0, 2.0]  # hours: the two-hour slot
        assert pyproj.CRS.from_cf(nc["crs"].__dict__).to_epsg() == 4326
        for name in ("red_var", "green_var", "blue_var", "alpha_var"):
            variable = nc[name]
            assert variable.dimensions == ("time", "lat", "lon") and variable.dtype == np.uint8
            assert variable.chunking() == [1, 180, 360] and variable.filters()["zlib"]
            assert variable._FillValue == 0 and variable.grid_mapping == "crs" and variable.long_name
        def at(name: str, latitude: float, longitude: float) -> int:
            values = nc[name]
            values.set_auto_mask(False)
            return int(values[0, int((latitude + 90) / 0.25), int((longitude + 180) / 0.25)])
        sahara, ocean = (23.0, 10.0), (-30.0, -20.0)
        assert at("red_var", *sahara) > 150 and at("green_var", *sahara) == 1 and at("alpha_var", *sahara) == 255
        assert [at(name, *ocean) for name in ("red_var", "green_var", "blue_var", "alpha_var")] == [0, 0, 0, 0]
