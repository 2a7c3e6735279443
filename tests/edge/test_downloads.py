"""Downloading the files geomesh serves itself (/data/...), whole, resumed, and refused."""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import urllib.request
from collections.abc import AsyncIterator

import h5py
import pytest
from aiohttp import web

from catalog.demo.atl08 import COLLECTION_ID as ATL08
from edge.api.downloads import media_type_of, relay_file, requested_offset
from tests.conftest import GLOBAL_GRANULE, Mesh
from tests.edge.test_coverages import get
from tests.loopback import serve_app

FIRST_FILE = "ATL08_20181014044639_02380101_002_01.h5"
FIRST_PATH = f"granules/{ATL08}/{FIRST_FILE}"


async def test_get_returns_the_file_as_on_disk(mesh: Mesh) -> None:
    expected = (mesh.data_dir / FIRST_PATH).read_bytes()
    status, headers, body = await get(f"{mesh.url}/data/{FIRST_PATH}")
    assert status == 200
    assert body == expected
    assert headers["Content-Length"] == str(len(expected))
    assert headers["Content-Type"] == "application/x-hdf5"
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Disposition"] == f'attachment; filename="{FIRST_FILE}"'
    assert headers["X-Request-Id"]
    with h5py.File(io.BytesIO(body), "r") as h5:
        assert h5.attrs["granule_id"] == "G1229652687-NSIDC_TS1"
        assert h5["gt1l/land_segments/canopy/h_canopy"].shape[0] > 0


async def test_an_open_range_resumes_the_download(mesh: Mesh) -> None:
    expected = (mesh.data_dir / FIRST_PATH).read_bytes()
    status, headers, body = await get(f"{mesh.url}/data/{FIRST_PATH}", headers={"Range": "bytes=100-"})
    assert status == 206
    assert body == expected[100:]
    assert headers["Content-Range"] == f"bytes 100-{len(expected) - 1}/{len(expected)}"
    assert headers["Content-Length"] == str(len(expected) - 100)


@pytest.mark.parametrize("range_header", ["bytes=0-99", "bytes=-100", "bytes=5-,10-", "lines=1-", "bytes=0-"])
async def test_other_ranges_get_the_whole_file(mesh: Mesh, range_header: str) -> None:
    expected = (mesh.data_dir / FIRST_PATH).read_bytes()
    status, headers, body = await get(f"{mesh.url}/data/{FIRST_PATH}", headers={"Range": range_header})
    assert (status, body) == (200, expected)
    assert "Content-Range" not in headers


async def test_a_range_past_the_end_is_not_satisfiable(mesh: Mesh) -> None:
    size = (mesh.data_dir / FIRST_PATH).stat().st_size
    for start in (size, size + 1, 10**12):
        status, headers, body = await get(f"{mesh.url}/data/{FIRST_PATH}", headers={"Range": f"bytes={start}-"})
        assert status == 416
        assert headers["Content-Range"] == f"bytes */{size}"
        assert json.loads(body)["code"] == "harmony.RequestValidationError"


@pytest.mark.parametrize("path", [
    f"granules/{ATL08}/ATL08_nope.h5",
    "catalog.json",
    f"granules/{ATL08}/%2e%2e/%2e%2e/catalog.json",
    "granules/%2e%2e/catalog.json",
])
async def test_unknown_or_hidden_paths_are_404_json(mesh: Mesh, path: str) -> None:
    status, headers, body = await get(f"{mesh.url}/data/{path}")
    assert status == 404
    assert headers["Content-Type"].startswith("application/json")
    error = json.loads(body)
    assert set(error) == {"code", "description"} and error["code"] == "harmony.NotFoundError"


async def test_head_gives_the_size_without_the_body(mesh: Mesh) -> None:
    size = (mesh.data_dir / FIRST_PATH).stat().st_size
    request = urllib.request.Request(f"{mesh.url}/data/{FIRST_PATH}", method="HEAD")

    def head() -> tuple[int, dict[str, str], bytes]:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()

    status, headers, body = await asyncio.to_thread(head)
    assert (status, headers["Content-Length"], body) == (200, str(size), b"")


def test_media_types_by_extension() -> None:
    assert media_type_of("a.h5") == "application/x-hdf5"
    assert media_type_of("b.NC") == "application/x-netcdf4"
    assert media_type_of("c.tif") == "image/tiff"
    assert media_type_of("d.png") == "image/png"
    assert media_type_of("no_extension") == "application/octet-stream"


async def test_a_stream_that_fails_mid_way_cuts_the_body_short() -> None:
    """relay_file on its own: what a client sees when the source breaks after the headers."""

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        raise RuntimeError("source lost")

    async def handler(request: web.Request) -> web.StreamResponse:
        return await relay_file(
            request, file_name="f.bin", media_type="application/octet-stream",
            size=5000, offset=requested_offset(request), chunks=broken(),
        )

    app = web.Application()
    app.router.add_get("/f", handler)
    async with serve_app(app) as url:

        def fetch_partial() -> tuple[int, int, bytes]:
            host, port = url.removeprefix("http://").split(":")
            connection = http.client.HTTPConnection(host, int(port), timeout=10)
            connection.request("GET", "/f")
            response = connection.getresponse()
            try:
                return response.status, int(response.headers["Content-Length"]), response.read()
            except http.client.IncompleteRead as short:
                return response.status, int(response.headers["Content-Length"]), short.partial

        status, length, body = await asyncio.to_thread(fetch_partial)
    assert (status, length) == (200, 5000)
    assert body == b"x" * 1000


# Offsets past int64 were a 500 (protobuf refused the value), past 4300 digits too (int() refused the text).
HUGE_OFFSETS = ["99999999999999999999999", str(2**63), "9" * 5000, "0" * 30 + "7"]


@pytest.mark.parametrize("start", HUGE_OFFSETS[:3])
async def test_a_range_past_any_file_is_not_satisfiable(mesh: Mesh, start: str) -> None:
    size = (mesh.data_dir / FIRST_PATH).stat().st_size
    status, headers, body = await get(f"{mesh.url}/data/{FIRST_PATH}", headers={"Range": f"bytes={start}-"})
    assert (status, headers["Content-Range"]) == (416, f"bytes */{size}")
    assert json.loads(body)["code"] == "harmony.RequestValidationError"


async def test_leading_zeros_are_just_an_offset(mesh: Mesh) -> None:
    expected = (mesh.data_dir / FIRST_PATH).read_bytes()
    status, _, body = await get(f"{mesh.url}/data/{FIRST_PATH}", headers={"Range": f"bytes={HUGE_OFFSETS[3]}-"})
    assert (status, body) == (206, expected[7:])


async def test_job_outputs_refuse_huge_ranges_items_and_indexes(mesh: Mesh) -> None:
    from tests.edge.test_jobs import submit, wait_for

    job = await wait_for(mesh, await submit(mesh, f"granuleId={GLOBAL_GRANULE}&forceAsync=true"))
    (link,) = [link["href"] for link in job["links"] if link["rel"] == "data"]
    for start in HUGE_OFFSETS[:3]:
        status, headers, body = await get(link, headers={"Range": f"bytes={start}-"})
        assert status == 416 and headers["Content-Range"].startswith("bytes */"), body[:300]
    job_id = job["jobID"]
    # Work item ids are int64s: "²" is a digit to str.isdigit but not to int(), 5000 digits are past int().
    for item in ("%C2%B2", "9" * 5000, "9" * 30):
        status, _, body = await get(f"{mesh.url}/service-results/{job_id}/{item}/001_00_7f00ff_global.tif")
        assert status == 404, body[:300]
        assert json.loads(body)["code"] == "harmony.NotFoundError"
    for index in ("9" * 5000, "9" * 30):
        status, _, body = await get(f"{mesh.url}/stac/{job_id}/{index}")
        assert status == 404, body[:300]
        assert json.loads(body)["description"].startswith(f"Error: Job {job_id} has 1 outputs: there is no STAC item 999")
