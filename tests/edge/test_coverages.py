"""The seed notebook's synchronous rangeset requests, end to end through a real mesh."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import aiohttp
import pytest
import rasterio
from rasterio.io import MemoryFile

from tests.conftest import GLOBAL_GRANULE, Mesh

AFRICA_GRANULE = "G1233800479-EEDTEST"  # 016_01_ff0000_africa


def fetch(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """What the seed does: urllib, in a thread so the mesh on this loop keeps serving."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


async def get(url: str, **kwargs: object) -> tuple[int, dict[str, str], bytes]:
    return await asyncio.to_thread(fetch, url, **kwargs)


def open_tiff(body: bytes) -> rasterio.io.DatasetReader:
    return MemoryFile(body).open()


async def test_variable_subset_of_the_global_granule(mesh: Mesh) -> None:
    status, headers, body = await get(
        f"{mesh.coverages()}/collections/blue_var/coverage/rangeset?granuleid={GLOBAL_GRANULE}"
    )
    assert status == 200, body
    assert headers["Content-Type"] == "image/tiff"
    assert headers["Transfer-Encoding"] == "chunked"
    assert 'filename="001_00_7f00ff_global_blue_var.tif"' in headers["Content-Disposition"]
    with open_tiff(body) as dataset:
        assert dataset.count == 1
        assert dataset.descriptions == ("blue_var",)
        assert dataset.crs.to_epsg() == 4326
        assert dataset.bounds == pytest.approx((-180, -90, 180, 90))
        assert dataset.read(1).max() > 0  # land is coloured


async def test_bbox_subset_matches_the_requested_box(mesh: Mesh) -> None:
    status, headers, body = await get(
        f"{mesh.coverages()}/collections/all/coverage/rangeset?granuleid={GLOBAL_GRANULE}"
        "&subset=lat(-45.75:-9)&subset=lon(110:156)"
    )
    assert status == 200, body
    with open_tiff(body) as dataset:
        assert dataset.count == 4
        assert dataset.descriptions == ("red_var", "green_var", "blue_var", "alpha_var")
        assert dataset.crs.to_epsg() == 4326
        half_x, half_y = abs(dataset.res[0]) / 2 + 1e-9, abs(dataset.res[1]) / 2 + 1e-9  # float noise
        west, south, east, north = dataset.bounds
        assert abs(west - 110) <= half_x and abs(east - 156) <= half_x
        assert abs(south - -45.75) <= half_y and abs(north - -9) <= half_y
        assert dataset.read(4).max() == 255  # Australia is land


async def test_time_subset_picks_the_one_africa_granule(mesh: Mesh) -> None:
    status, _, body = await get(
        f'{mesh.coverages()}/collections/all/coverage/rangeset?&subset=time("2020-01-16T02:00:00.000Z":"2020-01-16T03:00:00.000Z")'
    )
    assert status == 200, body
    with open_tiff(body) as dataset:
        assert dataset.tags()["HARMONY_HEX_COLOR"] == "ff0000"
        west, south, east, north = dataset.bounds
        assert -30 < west < 0 and 40 < east < 70  # Africa, not the world


async def test_post_form_and_multipart_equal_get(mesh: Mesh) -> None:
    url = f"{mesh.coverages()}/collections/parameter_vars/coverage/rangeset"
    fields = [("granuleId", GLOBAL_GRANULE), ("variable", "red_var"), ("variable", "blue_var"),
              ("subset", "lat(-10:10)"), ("subset", "lon(0:20)"), ("format", "image/tiff")]
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=fields) as response:
            assert response.status == 200, await response.text()
            urlencoded = await response.read()
        form = aiohttp.FormData()
        for name, value in fields:
            form.add_field(name, value)
        async with session.post(url, data=form) as response:
            assert response.status == 200, await response.text()
            multipart = await response.read()
    for body in (urlencoded, multipart):
        with open_tiff(body) as dataset:
            assert dataset.descriptions == ("red_var", "blue_var")
            assert dataset.bounds == pytest.approx((0, -10, 20, 10), abs=0.05)


def _part(headers: str, value: bytes = b"x") -> bytes:
    return b"--b\r\n" + headers.encode() + b"\r\n\r\n" + value + b"\r\n--b--\r\n"


# Found by schemathesis (tests/edge/test_schemathesis.py): aiohttp's form parsers raised, and each was a 500.
@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        ("multipart/form-data", b"granuleId=x", "boundary missed"),
        ("multipart/form-data; boundary=b", _part('Content-Disposition: form-data; name="granuleId"\r\nBad Header: x'), ""),
        ("multipart/form-data; boundary=b",
         _part('Content-Disposition: form-data; name="granuleId"\r\nContent-Type: text/plain; charset=nope'), "nope"),
        ("multipart/form-data; boundary=b",
         _part('Content-Disposition: form-data; name="granuleId"\r\nContent-Transfer-Encoding: rot13'), "rot13"),
        ("multipart/form-data; boundary=b", _part('Content-Disposition: form-data; name="granuleId"', b"\xff\xfe"), "utf-8"),
    ],
    ids=["no boundary", "bad part header", "unknown charset", "unknown transfer encoding", "not utf-8"],
)
async def test_malformed_post_bodies_are_400s(mesh: Mesh, content_type: str, body: bytes, reason: str) -> None:
    status, headers, answer = await get(mesh.rangeset(), data=body, headers={"Content-Type": content_type})
    assert status == 400, answer
    error = json.loads(answer)
    assert error["code"] == "harmony.RequestValidationError"
    assert error["description"].startswith("Error: The request body could not be read") and reason in error["description"]


async def test_comma_separated_variables_and_png(mesh: Mesh) -> None:
    status, headers, body = await get(
        f"{mesh.coverages()}/collections/red_var,green_var,blue_var/coverage/rangeset"
        f"?granuleId={GLOBAL_GRANULE}&subset=lat(0:40)&subset=lon(-20:40)&format=image/png"
    )
    assert status == 200, body
    assert headers["Content-Type"] == "image/png"
    assert body.startswith(b"\x89PNG\r\n\x1a\n")
    with MemoryFile(body).open(driver="PNG") as image:
        assert (image.count, image.width, image.height) == (3, 600, 400)


async def test_granule_name_with_wildcard(mesh: Mesh) -> None:
    status, _, body = await get(
        f"{mesh.coverages()}/collections/alpha_var/coverage/rangeset?granuleName=016_01_*_africa"
    )
    assert status == 200, body
    with open_tiff(body) as dataset:
        assert dataset.descriptions == ("alpha_var",)


@pytest.mark.parametrize(
    ("path", "status", "code", "description"),
    [
        ("/C0000000000-NOPE/ogc-api-coverages/1.0.0/collections/all/coverage/rangeset", 404, "harmony.NotFoundError",
         "C0000000000-NOPE must be a collection short name or CMR collection concept ID"),
        ("{coverages}/collections/nope_var,red_var,bad/coverage/rangeset?granuleId=" + GLOBAL_GRANULE, 400,
         "harmony.RequestValidationError", "Error: Coverages were not found for the provided variables: nope_var, bad"),
        ("{coverages}/collections/all/coverage/rangeset?subset=lat(10:abc)", 400, "harmony.RequestValidationError",
         'the maximum of "lat" must be a number'),
        ("{coverages}/collections/all/coverage/rangeset?subset=lat(10:-10)", 400, "harmony.RequestValidationError",
         'the minimum of "lat" must not be greater than its maximum'),
        ("{coverages}/collections/all/coverage/rangeset?subset=latitude", 400, "harmony.RequestValidationError",
         '"latitude" could not be parsed'),
        ('{coverages}/collections/all/coverage/rangeset?subset=time("yesterday":*)', 400,
         "harmony.RequestValidationError", "the start time must be an RFC 3339 date-time"),
        ('{coverages}/collections/all/coverage/rangeset?subset=time("2019-01-01T00:00:00Z":"2019-02-01T00:00:00Z")',
         400, "harmony.RequestValidationError", "Error: No matching granules found."),
        ("{coverages}/collections/all/coverage/rangeset?maxResults=0", 400, "harmony.RequestValidationError",
         'query parameter "maxResults" should be >= 1'),
        ("{coverages}/collections/all/coverage/rangeset?granuleid=" + GLOBAL_GRANULE + "&bogus=1", 400,
         "harmony.RequestValidationError", "Unknown query parameter 'bogus'"),
        ("{coverages}/collections/all/coverage/rangeset?granuleId=" + GLOBAL_GRANULE + "&subset=depth(0:10)", 422,
         "harmony.UnsupportedOperation", "the requested combination of operations: dimension subsetting on C1233800302-EEDTEST is unsupported"),
        ("{coverages}/collections/all/coverage/rangeset?granuleId=" + GLOBAL_GRANULE + "&format=application/x-zarr", 422,
         "harmony.UnsupportedOperation", "reformatting to application/x-zarr"),
        ("{coverages}/collections/all/coverage/rangeset?granuleId=" + AFRICA_GRANULE + "&subset=lon(-170:-160)",
         400, "harmony.RequestValidationError", "Error: No matching granules found."),
        # An empty value was dropped: granuleid= became a job over all 177 granules.
        ("{coverages}/collections/all/coverage/rangeset?granuleid=", 400, "harmony.RequestValidationError",
         'query parameter "granuleId" is given with an empty value'),
        ("{coverages}/collections/all/coverage/rangeset?granuleName=", 400, "harmony.RequestValidationError",
         'query parameter "granuleName" is given with an empty value'),
        ("{coverages}/collections/all/coverage/rangeset?granuleId=" + GLOBAL_GRANULE + "&subset=", 400,
         "harmony.RequestValidationError", 'query parameter "subset" is given with an empty value'),
        ("{coverages}/collections/parameter_vars/coverage/rangeset?granuleId=" + GLOBAL_GRANULE + "&variable=", 400,
         "harmony.RequestValidationError", 'query parameter "variable" is given with an empty value'),
    ],
)
async def test_bad_requests_get_harmony_errors(mesh: Mesh, path: str, status: int, code: str, description: str) -> None:
    url = path.format(coverages=mesh.coverages()) if path.startswith("{") else mesh.url + path
    got_status, headers, body = await get(url)
    assert got_status == status, body
    assert headers["Content-Type"].startswith("application/json")
    error = json.loads(body)
    assert error["code"] == code
    assert error["description"].startswith("Error: ")
    assert description in error["description"]


async def test_accept_header_chooses_the_format(mesh: Mesh) -> None:
    status, headers, body = await get(
        f"{mesh.coverages()}/collections/red_var/coverage/rangeset?granuleId={GLOBAL_GRANULE}&subset=lat(0:1)&subset=lon(0:1)",
        headers={"Accept": "image/png, image/tiff;q=0.5"},
    )
    assert status == 200 and headers["Content-Type"] == "image/png"
    status, _, body = await get(
        f"{mesh.coverages()}/collections/red_var/coverage/rangeset?granuleId={GLOBAL_GRANULE}",
        headers={"Accept": "application/x-zarr"},
    )
    assert status == 422 and "supported formats are: image/gif, image/jpeg, image/png, image/tiff" in json.loads(body)["description"]
