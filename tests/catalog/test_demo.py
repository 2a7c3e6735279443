"""The demo catalog: CMR's facts for harmony_example v1, and GeoTIFFs that clients can read."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp

from catalog.demo.generate import (
    COLLECTION_ID,
    DemoGranule,
    ensure_demo,
    generate_demo,
    hue_of,
    load_granules,
)
from catalog.models import CatalogFile

GLOBAL_ID = "G1233800343-EEDTEST"   # 001_00_7f00ff_global, used throughout the seed notebook
AFRICA_ID = "G1233800479-EEDTEST"   # 016_01_ff0000_africa, the seed's temporal example
NAME_RE = re.compile(r"^(\d{3})_(\d{2})_([0-9a-f]{6})_([a-z_]+?)(_poly)?$")


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _intersecting(granules: list[DemoGranule], start: str, end: str) -> list[DemoGranule]:
    lo, hi = _utc(start), _utc(end)
    return [g for g in granules if g.time_start <= hi and g.time_end >= lo]


def test_csv_has_the_collections_177_granules() -> None:
    granules = load_granules()
    assert len(granules) == 177
    assert len({g.id for g in granules}) == 177
    assert len({g.name for g in granules}) == 177
    assert all(re.fullmatch(r"G12\d{8}-EEDTEST", g.id) for g in granules)
    assert all(NAME_RE.match(g.name) for g in granules)
    by_id = {g.id: g for g in granules}
    assert by_id[GLOBAL_ID].name == "001_00_7f00ff_global"
    assert by_id[GLOBAL_ID].bbox == (-180.0, -90.0, 180.0, 90.0)
    assert by_id[AFRICA_ID].name == "016_01_ff0000_africa"
    for g in granules:
        west, south, east, north = g.bbox
        assert -180 <= west < east <= 180 and -90 <= south < north <= 90, g.name
        assert g.time_start < g.time_end


def test_seed_temporal_ranges_select_the_expected_granules() -> None:
    granules = load_granules()
    three = _intersecting(granules, "2020-01-16T02:00:00Z", "2020-01-16T07:00:00Z")
    assert sorted(g.name for g in three) == [
        "016_01_ff0000_africa", "016_02_ff0000_antarctica", "016_03_ff0000_asia_east"]
    one = _intersecting(granules, "2020-01-16T02:00:00Z", "2020-01-16T03:00:00Z")
    assert [g.id for g in one] == [AFRICA_ID]


def test_hue_of() -> None:
    assert hue_of("ff0000") == 0.0
    assert hue_of("7f00ff") == pytest.approx(0.7497, abs=1e-3)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("demo")
    generate_demo(data_dir, granules=[GLOBAL_ID, AFRICA_ID])
    return data_dir


def _tif(data_dir: Path, name: str) -> Path:
    return data_dir / "granules" / COLLECTION_ID / f"{name}.tif"


@pytest.mark.parametrize("name", ["001_00_7f00ff_global", "016_01_ff0000_africa"])
def test_geotiff_layout(demo_dir: Path, name: str) -> None:
    granule = next(g for g in load_granules() if g.name == name)
    with rasterio.open(_tif(demo_dir, name)) as ds:
        assert ds.count == 4
        assert ds.dtypes == ("uint8",) * 4
        assert ds.crs.to_epsg() == 4326
        assert ds.descriptions == ("red_var", "green_var", "blue_var", "alpha_var")
        assert ds.colorinterp == (
            ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha)
        assert ds.nodata is None
        assert tuple(ds.bounds) == pytest.approx(granule.bbox, abs=1e-9)
        assert ds.res == pytest.approx((0.1, 0.1), abs=1e-9)
        assert ds.block_shapes[0] == (256, 256)
        assert ds.compression.name.lower() == "deflate"
        hex_color = name.split("_")[2]
        tags = ds.tags()
        assert tags["HARMONY_HEX_COLOR"] == hex_color
        assert float(tags["HARMONY_HUE"]) == pytest.approx(hue_of(hex_color), abs=1e-5)


def _pixel(data_dir: Path, name: str, lon: float, lat: float) -> np.ndarray:
    with rasterio.open(_tif(data_dir, name)) as ds:
        row, col = ds.index(lon, lat)
        return ds.read(window=((row, row + 1), (col, col + 1)))[:, 0, 0]


def test_land_is_coloured_and_sea_is_empty(demo_dir: Path) -> None:
    congo = _pixel(demo_dir, "001_00_7f00ff_global", 20.0, 0.0)
    assert congo[3] == 255 and congo[0] > 0 and congo[1] == 0 and congo[2] > congo[0]
    pacific = _pixel(demo_dir, "001_00_7f00ff_global", -150.0, 0.0)
    assert pacific.tolist() == [0, 0, 0, 0]
    assert _pixel(demo_dir, "016_01_ff0000_africa", 25.0, 15.0).tolist()[1:] == [0, 0, 255]
    assert _pixel(demo_dir, "016_01_ff0000_africa", 25.0, 15.0)[0] > 0
    assert _pixel(demo_dir, "016_01_ff0000_africa", -20.0, 0.0).tolist() == [0, 0, 0, 0]  # Atlantic
    with rasterio.open(_tif(demo_dir, "001_00_7f00ff_global")) as ds:
        alpha = ds.read(4)
    assert 0.2 < (alpha == 255).mean() < 0.45  # land share of a lat/lon grid, Antarctica included
    assert set(np.unique(alpha).tolist()) == {0, 255}


def test_catalog_json_lists_what_was_written(demo_dir: Path) -> None:
    catalog = CatalogFile.model_validate_json((demo_dir / "catalog.json").read_text())
    (collection,) = catalog.collections
    assert collection.id == COLLECTION_ID
    assert collection.short_name == "harmony_example" and collection.version == "1"
    assert [v.name for v in collection.variables] == [
        "red_var", "green_var", "blue_var", "alpha_var"]
    assert [v.id for v in collection.variables] == [
        "V1233801695-EEDTEST", "V1233801696-EEDTEST", "V1233801716-EEDTEST", "V1233801717-EEDTEST"]
    assert {g.id for g in collection.granules} == {GLOBAL_ID, AFRICA_ID}
    for granule in collection.granules:
        (link,) = granule.links
        assert link.type == "image/tiff" and link.title == granule.id
        assert urlparse(link.href).scheme == "file"
        assert Path(url2pathname(urlparse(link.href).path)).is_file()


def test_ensure_demo_keeps_an_existing_catalog(demo_dir: Path) -> None:
    catalog_path = demo_dir / "catalog.json"
    before = catalog_path.stat().st_mtime_ns
    assert ensure_demo(demo_dir) == catalog_path
    assert catalog_path.stat().st_mtime_ns == before


def test_unknown_granule_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="G0-NOPE"):
        generate_demo(tmp_path, granules=["G0-NOPE"])
