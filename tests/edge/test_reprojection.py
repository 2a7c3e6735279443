"""The seed notebook's reprojection requests (and the grid parameters), end to end through a real mesh."""

from __future__ import annotations

import json
from urllib.parse import quote

import pyproj
import pytest
from rasterio.io import MemoryFile

from tests.conftest import GLOBAL_GRANULE, Mesh
from tests.edge.test_coverages import get

PROJ4_6933 = "+proj=cea +lon_0=0 +lat_ts=30 +x_0=0 +y_0=0 +ellps=WGS84 +towgs84=0,0,0,0,0,0,0 +units=m +no_defs"


async def test_the_seeds_epsg_and_proj4_requests_give_the_same_crs_and_grid(mesh: Mesh) -> None:
    grids = []
    for crs in ("EPSG:6933", quote(PROJ4_6933)):
        # As the seed writes it, with the stray "?&".
        status, headers, body = await get(
            f"{mesh.coverages()}/collections/all/coverage/rangeset?&granuleid={GLOBAL_GRANULE}&outputCrs={crs}"
        )
        assert status == 200, body
        assert headers["Content-Type"] == "image/tiff"
        assert 'filename="001_00_7f00ff_global_regridded.tif"' in headers["Content-Disposition"]
        with MemoryFile(body).open() as dataset:
            output_crs = pyproj.CRS.from_wkt(dataset.crs.to_wkt())
            assert output_crs.equals(pyproj.CRS.from_epsg(6933))
            assert "Cylindrical Equal Area" in output_crs.coordinate_operation.method_name  # as the seed shows
            assert dataset.count == 4 and dataset.read(1).any()
            grids.append((dataset.crs, dataset.transform, dataset.shape))
    assert grids[0] == grids[1]


async def test_grid_parameters_through_the_mesh(mesh: Mesh) -> None:
    extent = "-7000000,1000000,8000000,6000000"
    status, _, body = await get(
        f"{mesh.rangeset(variable='red_var')}?granuleId={GLOBAL_GRANULE}&outputCrs=EPSG:6933"
        f"&scaleExtent={extent}&width=150&height=50&interpolation=bilinear"
    )
    assert status == 200, body
    with MemoryFile(body).open() as dataset:
        assert (dataset.width, dataset.height) == (150, 50)
        assert tuple(dataset.bounds) == pytest.approx([-7e6, 1e6, 8e6, 6e6])


async def test_reprojected_png(mesh: Mesh) -> None:
    status, headers, body = await get(
        f"{mesh.rangeset()}?granuleId={GLOBAL_GRANULE}&outputCrs=EPSG:6933&scaleSize=100000,100000&format=image/png"
    )
    assert status == 200, body
    assert headers["Content-Type"] == "image/png" and body.startswith(b"\x89PNG")
    assert 'filename="001_00_7f00ff_global_regridded.png"' in headers["Content-Disposition"]


@pytest.mark.parametrize(
    ("query", "description"),
    [
        ("outputCrs=EPSG:nope", 'query parameter "crs/outputCrs" could not be parsed.  Try an EPSG code or Proj4 string.'),
        ("outputCrs=" + quote("+proj=nothing"), 'query parameter "crs/outputCrs" could not be parsed.  Try an EPSG code or Proj4 string.'),
        ("outputCrs=EPSG:6933&interpolation=smooth",
         'query parameter "interpolation" value "smooth" is not supported; use one of: near, nearest, bilinear, cubic, '
         "cubicspline, lanczos, average, mode, min, max, med, q1, q3"),
        ("scaleExtent=1,2,3", 'query parameter "scaleExtent" must be 4 comma-separated numbers'),
        ("scaleExtent=10,0,0,10", 'query parameter "scaleExtent" must be xmin,ymin,xmax,ymax with xmin less than xmax'),
        ("scaleSize=1,-1", 'query parameter "scaleSize" must be x,y with both sizes greater than 0'),
        ("scaleSize=1,1&width=10", 'query parameters "scaleSize" and "width"/"height" cannot both be given'),
        ("width=0", 'query parameter "width" should be >= 1'),
        ("height=40000", 'query parameter "height" should be <= 32768'),
        ("outputCrs=EPSG:6933&scaleSize=100,100", "above the limit of 32768 pixels a side"),
    ],
)
async def test_grid_validation_messages(mesh: Mesh, query: str, description: str) -> None:
    status, _, body = await get(f"{mesh.rangeset()}?granuleId={GLOBAL_GRANULE}&{query}")
    assert status == 400, body
    error = json.loads(body)
    assert error["code"] == "harmony.RequestValidationError"
    assert error["description"].startswith("Error: ") and description in error["description"]
    if "outputCrs" in description:
        assert error["description"] == "Error: " + description  # Harmony's exact words


ORTHO = quote("+proj=ortho +lon_0=-60")  # the hemisphere around 60 W
FAMILIES = [("C1233800302-EEDTEST", GLOBAL_GRANULE), ("C1234088182-EEDTEST", "G1234088191-EEDTEST")]  # gdal, netcdf


@pytest.mark.parametrize(("collection", "granule"), FAMILIES, ids=["gdal", "netcdf"])
async def test_an_area_an_orthographic_view_does_not_show_is_a_400(mesh: Mesh, collection: str, granule: str) -> None:
    """Australia seen from above 60 W: was a 500 in both families (GDAL could not size the output grid)."""
    status, _, body = await get(
        f"{mesh.rangeset(collection)}?granuleId={granule}&subset=lat(-45:-9)&subset=lon(110:156)&outputCrs={ORTHO}"
    )
    assert status == 400, body
    error = json.loads(body)
    assert error["code"] == "harmony.RequestValidationError"
    assert error["description"].startswith(f"Error: The requested area of granule {granule} (")
    assert "cannot be projected to the outputCrs +proj=ortho +lon_0=-60" in error["description"]
    assert "subset=lat(south:north)&subset=lon(west:east)" in error["description"]


@pytest.mark.parametrize(("collection", "granule"), FAMILIES, ids=["gdal", "netcdf"])
async def test_an_orthographic_view_of_a_global_granule_has_a_true_bbox(mesh: Mesh, collection: str, granule: str) -> None:
    """The view's grid reaches past the Earth: its links' bbox held a quarter of the view (or infinities, JSON
    that is not JSON)."""
    from tests.edge.test_jobs import submit, wait_for

    job_id = await submit(mesh, f"granuleId={granule}&forceAsync=true&outputCrs={ORTHO}", collection=collection)
    job = await wait_for(mesh, job_id)
    (link,) = [link for link in job["links"] if link["rel"] == "data"]
    assert link["bbox"] == [-180, -90, 180, 90]
