"""The demo catalog: CMR's facts for harmony_example v1, and GeoTIFFs that clients can read."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import h5py
import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp

from catalog.demo import atl08
from catalog.demo.generate import (
    COLLECTION_ID,
    DemoGranule,
    ensure_demo,
    generate_demo,
    hue_of,
    load_granules,
)
from catalog.local import LocalCatalog
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
        # Relative to the data folder, so the folder (or a bucket it is copied to) can be anywhere.
        assert not urlparse(link.href).scheme and (demo_dir / link.href).is_file()


def test_relative_links_resolve_against_the_data_url(demo_dir: Path) -> None:
    local = LocalCatalog.from_file(demo_dir / "catalog.json")
    [granule] = [g for c in local.collections for g in c.granules if g.id == GLOBAL_ID]
    path = Path(url2pathname(urlparse(granule.links[0].href).path))
    assert urlparse(granule.links[0].href).scheme == "file" and path.is_file()
    relative = path.relative_to(demo_dir.resolve()).as_posix()
    on_s3 = LocalCatalog.from_file(demo_dir / "catalog.json", "s3://demo-data/copy")
    [moved] = [g for c in on_s3.collections for g in c.granules if g.id == GLOBAL_ID]
    assert moved.links[0].href == f"s3://demo-data/copy/{relative}"


def test_ensure_demo_keeps_an_existing_catalog(demo_dir: Path) -> None:
    catalog_path = demo_dir / "catalog.json"
    before = catalog_path.stat().st_mtime_ns
    assert ensure_demo(demo_dir) == catalog_path
    assert catalog_path.stat().st_mtime_ns == before


def test_unknown_granule_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="G0-NOPE"):
        generate_demo(tmp_path, granules=["G0-NOPE"])


# --- ATL08: the seed's direct-download collection -------------------------------------------

ATL08_FIRST_ID = "G1229652687-NSIDC_TS1"
ATL08_FIRST_FILE = "ATL08_20181014044639_02380101_002_01.h5"
ATL08_LAST_ID = "G1233305183-NSIDC_TS1"  # ATL08_20190114204204_02660203_002_01.h5
SEED = Path(__file__).resolve().parents[3] / "shared" / "seed" / "harmony-api-introduction.txt"


def test_atl08_csv_holds_the_seeds_files_and_ids() -> None:
    rows = atl08.load_rows()
    assert len(rows) == 119 and len({r.file_name for r in rows}) == 119
    served = atl08.load_granules()
    assert len(served) == 98 and len({g.id for g in served}) == 98
    assert all(re.fullmatch(r"G12\d{8}-NSIDC_TS1", g.id) for g in served)
    assert (served[0].id, served[0].file_name) == (ATL08_FIRST_ID, ATL08_FIRST_FILE)
    assert served[-1].id == ATL08_LAST_ID
    # The ids the seed's truncated output hides: the 2nd to the 22nd file.
    assert [i for i, r in enumerate(rows) if not r.id] == list(range(1, 22))
    for row in rows:
        assert re.fullmatch(r"ATL08_\d{14}_\d{8}_002_01\.h5", row.file_name)
        assert row.date_folder == row.time_start.strftime("%Y.%m.%d")
    assert [r.time_start for r in rows] == sorted(r.time_start for r in rows)


@pytest.mark.skipif(not SEED.is_file(), reason=f"seed notebook not found at {SEED}")
def test_atl08_csv_agrees_with_the_seed_notebook() -> None:
    text = SEED.read_text()
    hrefs = re.findall(r"^https://\S+/ATL08\.002/(\S+)/(ATL08_\S+\.h5)$", text, re.M)
    assert [(r.date_folder, r.file_name) for r in atl08.load_rows()] == hrefs
    titled = dict(re.findall(r"(ATL08_\d{14}_\d{8}_002_01\.h5)',\s*'rel': 'data',\s*'title': '(G\d+-NSIDC_TS1)'", text))
    assert {g.file_name: g.id for g in atl08.load_granules()} == titled


def test_atl08_times_and_boxes_follow_the_file_names() -> None:
    first = atl08.load_granules()[0]
    assert first.time_start == _utc("2018-10-14T04:46:39Z")
    assert first.time_end == _utc("2018-10-14T04:51:39Z")
    assert (first.rgt, first.cycle, first.region) == (238, 1, 1)
    assert first.bbox == (-180.0, 0.0, 180.0, 27.0)
    by_region = {g.region: g.bbox for g in atl08.load_rows()}
    assert by_region[6] == (-180.0, 27.0, 180.0, 59.5)
    assert by_region[11] == (-180.0, -90.0, 180.0, -79.0)  # over the south polar cap
    assert by_region[14] == (-180.0, -27.0, 180.0, 0.0)


@pytest.fixture(scope="module")
def atl08_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("atl08")
    generate_demo(data_dir, granules=[ATL08_FIRST_ID, ATL08_LAST_ID])
    return data_dir


def test_catalog_json_lists_atl08_with_data_links(atl08_dir: Path) -> None:
    catalog = CatalogFile.model_validate_json((atl08_dir / "catalog.json").read_text())
    (collection,) = catalog.collections  # harmony_example has no granule in the filter
    assert collection.id == atl08.COLLECTION_ID == "C1229246405-NSIDC_TS1"
    assert (collection.short_name, collection.version, collection.provider) == ("ATL08", "002", "NSIDC_TS1")
    assert collection.title == "ATLAS/ICESat-2 L3A Land and Vegetation Height V002"
    assert [g.id for g in collection.granules] == [ATL08_FIRST_ID, ATL08_LAST_ID]
    first = collection.granules[0]
    assert first.name == ATL08_FIRST_FILE
    (link,) = first.links
    assert link.href == f"/data/granules/C1229246405-NSIDC_TS1/{ATL08_FIRST_FILE}"
    assert (link.type, link.title) == ("application/x-hdf5", ATL08_FIRST_ID)
    assert not (atl08_dir / "granules" / COLLECTION_ID).exists()  # no GeoTIFF was written


def test_atl08_files_open_as_atl08(atl08_dir: Path) -> None:
    path = atl08_dir / "granules" / atl08.COLLECTION_ID / ATL08_FIRST_FILE
    assert 10_000 < path.stat().st_size < 100_000
    with h5py.File(path, "r") as h5:
        assert h5.attrs["short_name"] == "ATL08"
        assert h5.attrs["granule_id"] == ATL08_FIRST_ID
        assert h5.attrs["producer_granule_id"] == ATL08_FIRST_FILE
        assert h5["orbit_info/rgt"][0] == 238
        for beam in atl08.BEAMS:
            segments = h5[f"{beam}/land_segments"]
            lat, lon = segments["latitude"][:], segments["longitude"][:]
            assert lat.min() >= 0.0 and lat.max() <= 27.0  # region 1
            assert -180.0 <= lon.min() and lon.max() < 180.0
            assert segments["latitude"].compression == "gzip"
            canopy = segments["canopy/h_canopy"]
            assert canopy.attrs["_FillValue"] == atl08.FILL
            assert canopy.shape == segments["terrain/h_te_best_fit"].shape == segments["delta_time"].shape
        start = (atl08.load_granules()[0].time_start - atl08.ATLAS_EPOCH).total_seconds()
        assert h5["gt1l/land_segments/delta_time"][0] == start


def test_atl08_files_are_byte_stable(atl08_dir: Path, tmp_path: Path) -> None:
    granule = atl08.load_granules()[-1]
    again = atl08.write_granule(granule, tmp_path / granule.file_name)
    assert again.read_bytes() == atl08.granule_path(atl08_dir, granule).read_bytes()
