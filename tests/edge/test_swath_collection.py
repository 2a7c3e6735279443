"""The seed notebook's L2 swath request (sds/swot-reproject), and regridding options, end to end through a real mesh."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import quote

import netCDF4
import numpy as np
import pyproj
import pytest
from affine import Affine
from rasterio.io import MemoryFile

from catalog.demo import l2_swath
from tests.conftest import Mesh
from tests.edge.test_coverages import get
from tests.edge.test_jobs import call, submit, wait_for

L2 = "C1233860183-EEDTEST"
SEED_GRANULE = "G1233860486-EEDTEST"  # 005_00_028_africa
# The seed encodes this (EASE-Grid 2.0's) proj4 string, not the Lambert conic it names just before.
SEED_PROJ4 = "+proj=cea +lon_0=0 +lat_ts=30 +x_0=0 +y_0=0 +ellps=WGS84 +towgs84=0,0,0,0,0,0,0 +units=m +no_defs"
SEED_EXTENT = (-7000000.0, 1000000.0, 8000000.0, 8000000.0)
SEED_VARIABLES = {"time", "blue_var", "lambert_cylindrical_equal_area", "x", "y", "alpha_var", "green_var", "red_var"}
SEED_QUERY = (
    f"granuleid={SEED_GRANULE}&outputCrs={quote(SEED_PROJ4)}&interpolation=near&scaleExtent=-7000000,1000000,8000000,8000000"
)


def seed_url(mesh: Mesh, variable: str = "all") -> str:
    return f"{mesh.rangeset(L2, variable)}?&{SEED_QUERY}"


def _open(body: bytes, tmp_path: Path, name: str = "regrid.nc") -> netCDF4.Dataset:
    path = tmp_path / name
    path.write_bytes(body)
    return netCDF4.Dataset(path)


def _same_projection(a: pyproj.CRS, b: pyproj.CRS) -> bool:
    """Both place lon/lat points at the same coordinates (within a millimetre)."""
    lons, lats = np.meshgrid(np.linspace(-170, 170, 9), np.linspace(-80, 80, 9))
    xa, ya = pyproj.Transformer.from_crs(4326, a, always_xy=True).transform(lons, lats)
    xb, yb = pyproj.Transformer.from_crs(4326, b, always_xy=True).transform(lons, lats)
    return bool(np.allclose(xa, xb, atol=1e-3) and np.allclose(ya, yb, atol=1e-3))


@pytest.fixture(scope="module")
def source(mesh: Mesh) -> dict[str, np.ndarray]:
    """The seed granule's own lat, lon and variables, as the demo wrote them."""
    granule = next(g for g in l2_swath.load_granules() if g.id == SEED_GRANULE)
    with netCDF4.Dataset(l2_swath.granule_path(mesh.data_dir, granule)) as nc:
        nc.set_auto_maskandscale(False)
        return {name: nc[name][:] for name in ("lat", "lon", "red_var", "green_var", "blue_var", "alpha_var")}


async def test_the_seeds_regrid_request(mesh: Mesh, tmp_path: Path, source: dict[str, np.ndarray]) -> None:
    started = time.perf_counter()
    status, headers, body = await get(seed_url(mesh))
    elapsed = time.perf_counter() - started
    assert status == 200, body
    assert headers["Content-Type"] == "application/x-netcdf4"
    assert 'filename="005_00_028_africa_regridded.nc"' in headers["Content-Disposition"]
    print(f"seed regrid request: {elapsed:.2f} s, {len(body)} bytes")
    with _open(body, tmp_path) as nc:
        assert set(nc.variables) == SEED_VARIABLES
        blue = nc["blue_var"]
        assert blue.dimensions == ("time", "y", "x") and blue.dtype == np.uint8
        assert blue.shape == (1, 635, 1360)  # as the seed's, from the swath's ~11 km spacing
        assert {"_FillValue", "scale_factor", "add_offset", "grid_mapping"} <= set(blue.ncattrs())
        assert (blue.scale_factor, blue.add_offset, blue.getncattr("_FillValue")) == (2, 28, 255)
        assert blue.grid_mapping == "lambert_cylindrical_equal_area"
        x, y = nc["x"][:], nc["y"][:]
        dx, dy = abs(x[1] - x[0]), abs(y[1] - y[0])
        xmin, ymin, xmax, ymax = SEED_EXTENT
        assert 0 < x.min() - xmin <= dx and 0 < xmax - x.max() <= dx
        assert 0 < y.min() - ymin <= dy and 0 < ymax - y.max() <= dy
        assert nc["x"].standard_name == "projection_x_coordinate" and nc["x"].units == "m"
        mapping = nc["lambert_cylindrical_equal_area"]
        assert mapping.grid_mapping_name == "lambert_cylindrical_equal_area"
        assert _same_projection(pyproj.CRS.from_wkt(mapping.crs_wkt), pyproj.CRS.from_proj4(SEED_PROJ4))
        nc.set_auto_maskandscale(False)
        out = {name: nc[name][0] for name in ("red_var", "green_var", "blue_var", "alpha_var")}
        assert len(nc["time"]) == 1

    # Source pixels well inside one kind of surface land on output pixels of the same kind.
    to_grid = pyproj.Transformer.from_crs(4326, pyproj.CRS.from_proj4(SEED_PROJ4), always_xy=True)
    alpha = source["alpha_var"]
    checked = {255: 0, 127: 0}
    for row in range(10, alpha.shape[0] - 10, 11):
        for col in range(10, alpha.shape[1] - 10, 11):
            block = alpha[row - 4:row + 5, col - 4:col + 5]
            if (block != block[0, 0]).any():
                continue  # near a coast: nearest neighbour may pick either side
            px, py = to_grid.transform(source["lon"][row, col], source["lat"][row, col])
            i, j = int((ymax - py) // dy), int((px - xmin) // dx)
            if not (0 <= i < out["alpha_var"].shape[0] and 0 <= j < out["alpha_var"].shape[1]):
                continue
            land = alpha[row, col] == 255
            assert out["alpha_var"][i, j] == alpha[row, col]
            assert (out["blue_var"][i, j] == 255) == land  # blue is nodata over land
            assert (out["green_var"][i, j] == 255) == (not land)  # green over water
            checked[int(alpha[row, col])] += 1
    assert checked[255] > 20 and checked[127] > 20, checked
    # Outside the swath every variable holds its fill value (top left: the Arctic, far from the track).
    assert [out[name][0, 0] for name in ("red_var", "green_var", "blue_var", "alpha_var")] == [127, 255, 255, 0]
    # Sahara and Mediterranean, at named places.
    for lon, lat, expected in ((12.0, 24.0, 255), (18.0, 34.0, 127)):
        px, py = to_grid.transform(lon, lat)
        assert out["alpha_var"][int((ymax - py) // dy), int((px - xmin) // dx)] == expected, (lon, lat)


async def test_bilinear_differs_from_near(mesh: Mesh, tmp_path: Path) -> None:
    grids = {}
    for interpolation in ("near", "bilinear"):
        url = seed_url(mesh).replace("interpolation=near", f"interpolation={interpolation}") + "&width=500&height=240"
        status, _, body = await get(url)
        assert status == 200, body
        with _open(body, tmp_path, f"{interpolation}.nc") as nc:
            nc.set_auto_maskandscale(False)
            grids[interpolation] = nc["green_var"][0]
    near, bilinear = grids["near"], grids["bilinear"]
    assert near.shape == bilinear.shape == (240, 500)
    valid = (near != 255) & (bilinear != 255)
    assert valid.sum() > 1000
    assert (near[valid] != bilinear[valid]).sum() > 0.05 * valid.sum()
    assert set(np.unique(near[valid])) <= set(range(1, 17))  # nearest keeps the source's values


@pytest.mark.parametrize(
    ("extra", "shape"),
    [("&width=300&height=140", (140, 300)), ("&scaleSize=100000,50000", (140, 150)), ("&width=300", (140, 300))],
)
async def test_width_height_and_scale_size(mesh: Mesh, tmp_path: Path, extra: str, shape: tuple[int, int]) -> None:
    status, _, body = await get(seed_url(mesh) + extra)
    assert status == 200, body
    with _open(body, tmp_path) as nc:
        assert nc["red_var"].shape == (1, *shape)
        x, y = nc["x"][:], nc["y"][:]
        assert x[1] - x[0] == pytest.approx(15e6 / shape[1]) and y[0] - y[1] == pytest.approx(7e6 / shape[0])


async def test_default_grid_is_geographic_at_the_swaths_spacing(mesh: Mesh, tmp_path: Path, source: dict[str, np.ndarray]) -> None:
    status, headers, body = await get(f"{mesh.rangeset(L2)}?granuleId={SEED_GRANULE}")
    assert status == 200, body
    with _open(body, tmp_path) as nc:
        assert nc["red_var"].grid_mapping == "latitude_longitude"
        assert (nc["x"].standard_name, nc["y"].standard_name) == ("longitude", "latitude")
        x = nc["x"][:]
        # Pixel centres span the swath's longitudes, a pixel as fine as the finer source spacing.
        spacing = np.median(np.abs(np.diff(source["lon"], axis=1)))
        assert x[1] - x[0] == pytest.approx(spacing, rel=0.05)
        assert x.min() == pytest.approx(source["lon"].min(), abs=x[1] - x[0])
        assert x.max() == pytest.approx(source["lon"].max(), abs=x[1] - x[0])


async def test_geotiff_output(mesh: Mesh) -> None:
    status, headers, body = await get(seed_url(mesh) + "&format=image/tiff&width=600&height=280")
    assert status == 200, body
    assert headers["Content-Type"] == "image/tiff"
    assert 'filename="005_00_028_africa_regridded.tif"' in headers["Content-Disposition"]
    with MemoryFile(body).open() as dataset:
        assert _same_projection(pyproj.CRS.from_wkt(dataset.crs.to_wkt()), pyproj.CRS.from_proj4(SEED_PROJ4))
        assert dataset.transform.almost_equals(Affine(15e6 / 600, 0, -7e6, 0, -7e6 / 280, 8e6))
        assert dataset.count == 4 and dataset.descriptions == ("red_var", "green_var", "blue_var", "alpha_var")
        assert dataset.scales[2] == 2 and dataset.offsets[2] == 28
        mask = dataset.dataset_mask()
        assert mask[0, 0] == 0 and mask.any()  # outside the swath is masked, the swath is not


@pytest.mark.parametrize(
    ("path", "query", "status", "description"),
    [
        ("blue_var", "", 422,
         "Error: the requested combination of operations: variable subsetting on C1233860183-EEDTEST is unsupported"),
        ("blue_var", f"&{SEED_QUERY}", 422,
         "Error: the requested combination of operations: variable subsetting and reprojection on C1233860183-EEDTEST "
         "is unsupported"),
        ("all", f"&{SEED_QUERY}&subset=lat(0:20)&subset=lon(0:20)", 422,
         "Error: the requested combination of operations: spatial subsetting and reprojection on C1233860183-EEDTEST "
         "is unsupported"),
        ("all", f"&{SEED_QUERY}&format=image/png", 422,
         "supported output formats are: application/x-netcdf4, image/tiff"),
    ],
)
async def test_unsupported_operations(mesh: Mesh, path: str, query: str, status: int, description: str) -> None:
    code, _, body = await get(f"{mesh.rangeset(L2, path)}?granuleId={SEED_GRANULE}{query}")
    assert code == status, body
    error = json.loads(body)
    assert error["code"] == "harmony.UnsupportedOperation"
    assert description in error["description"]


async def test_bad_crs_gets_harmonys_message(mesh: Mesh) -> None:
    status, _, body = await get(f"{mesh.rangeset(L2)}?granuleId={SEED_GRANULE}&outputCrs=EPSG:nope")
    assert status == 400, body
    assert json.loads(body) == {
        "code": "harmony.RequestValidationError",
        "description": 'Error: query parameter "crs/outputCrs" could not be parsed.  Try an EPSG code or Proj4 string.',
    }


async def test_several_granules_become_a_job_of_regridded_swaths(mesh: Mesh, tmp_path: Path) -> None:
    day = 'subset=time("2020-01-05T00:00:00.000Z":"2020-01-05T23:59:59.000Z")'
    job_id = await submit(mesh, f"{day}&outputCrs=EPSG:6933&width=200&height=100", collection=L2)
    job = await wait_for(mesh, job_id)
    assert job["numInputGranules"] == 3
    expected = {f"{g.name}_regridded.nc" for g in l2_swath.load_granules() if g.time_start.day == 5}
    data = [link for link in job["links"] if link["rel"] == "data"]
    assert {link["title"] for link in data} == expected and len(expected) == 3
    for link in data:
        assert link["type"] == "application/x-netcdf4"
        body = (await call("GET", link["href"])).content
        with _open(body, tmp_path, link["title"]) as nc:
            assert nc["alpha_var"].shape == (1, 100, 200)
            assert nc["alpha_var"].grid_mapping == "lambert_cylindrical_equal_area"


async def test_capabilities_name_the_swath_service(mesh: Mesh) -> None:
    response = await call("GET", f"{mesh.url}/capabilities", params={"collectionId": L2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["shortName"], body["reproject"], body["variableSubset"], body["bboxSubset"]) == (
        "harmony_example_l2", True, False, False
    )
    service = next(s for s in body["services"] if s["name"] == "sds/swot-reproject")
    assert service["capabilities"]["output_formats"] == ["application/x-netcdf4", "image/tiff"]
    assert service["capabilities"]["reprojection"] is True
    assert {v["name"] for v in body["variables"]} == {"red_var", "green_var", "blue_var", "alpha_var"}
