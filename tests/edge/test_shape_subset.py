"""Shape subsetting end to end through a real mesh: multipart `shapefile` uploads of every kind,
harmony-py's `shape=`, and the errors a user sees."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import rasterio
from harmony import Client, Collection, Environment, Request
from rasterio.features import geometry_mask
from rasterio.io import MemoryFile
from rasterio.transform import from_origin
from shapely.geometry import MultiPolygon, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from edge.api.coverages import SHAPE_LIMIT
from geomesh.nesting import MAX_DEPTH
from geomesh.shapes import MAX_VERTICES
from tests.conftest import GLOBAL_GRANULE, HARMONY_EXAMPLE, Mesh
from tests.edge.test_formats import open_image
from tests.edge.test_jobs import wait_for
from tests.shape_files import geojson, kml, zipped_shapefile

AFRICA_GRANULE = "G1233800344-EEDTEST"  # 001_01_7f00ff_africa: -25.4,-34.9,63.5,37.4
# A triangle over Africa and a square over the Arabian Sea: 0.1 degree pixels of the global granule.
TRIANGLE = Polygon([(10, -10), (40, -10), (10, 20)])
AREA = MultiPolygon([TRIANGLE, box(55, 5, 60, 15)])
PIXEL = 0.1


@pytest.fixture(scope="module")
def source(mesh: Mesh) -> Iterator[rasterio.io.DatasetReader]:
    with rasterio.open(mesh.data_dir / "granules" / HARMONY_EXAMPLE / "001_00_7f00ff_global.tif") as dataset:
        yield dataset


async def post(mesh: Mesh, fields: list[tuple[str, str]], upload: tuple[bytes, str | None, str] | None) -> tuple[int, dict, bytes]:
    """A multipart POST; upload is (content, content type, file name), a None type sends no Content-Type."""
    form = aiohttp.FormData()
    for name, value in fields:
        form.add_field(name, value)
    if upload is not None:
        content, content_type, file_name = upload
        form.add_field("shapefile", content, filename=file_name, content_type=content_type)
    writer = form()
    if upload is not None and upload[1] is None:
        for part, _, _ in writer._parts:  # aiohttp fills in application/octet-stream: send none at all
            if part.filename == upload[2]:
                part.headers.pop("Content-Type", None)
    async with aiohttp.ClientSession() as session:
        async with session.post(mesh.rangeset(), data=writer) as response:
            return response.status, dict(response.headers), await response.read()


def check_masked(body: bytes, shape: BaseGeometry, source: rasterio.io.DatasetReader) -> None:
    """Bounds within a pixel of the shape's; inside, the source's pixels; outside, alpha 0 and no colour."""
    with MemoryFile(body).open() as image:
        assert image.crs.to_epsg() == 4326 and image.count == 4
        assert image.bounds == pytest.approx(shape.bounds, abs=PIXEL)
        data = image.read()
        window = rasterio.windows.from_bounds(*image.bounds, transform=source.transform)
        original = source.read(window=window.round_offsets().round_lengths())
        inside = geometry_mask([shape], out_shape=data.shape[1:], transform=image.transform, invert=True)
    assert inside.any() and (~inside).any()
    assert (data[:, inside] == original[:, inside]).all()
    assert (data[:, ~inside] == 0).all()
    assert (original[3, ~inside] == 255).any()  # land outside the shape was there to mask


@pytest.mark.parametrize(
    ("kind", "upload"),
    [
        ("geojson", lambda: (geojson(*AREA.geoms), "application/geo+json", "area.geojson")),
        ("kml", lambda: (kml(*AREA.geoms), "application/vnd.google-earth.kml+xml", "area.kml")),
        ("shapefile in Web Mercator", lambda: (zipped_shapefile(AREA, crs="EPSG:3857"), "application/shapefile+zip", "area.zip")),
        ("kind from the name, no header", lambda: (kml(*AREA.geoms), None, "area.kml")),
        ("kind from the name, octet-stream", lambda: (zipped_shapefile(AREA), "application/octet-stream", "area.zip")),
    ],
)
async def test_each_upload_kind_masks_the_global_granule(mesh: Mesh, source, kind: str, upload) -> None:
    status, headers, body = await post(mesh, [("granuleId", GLOBAL_GRANULE)], upload())
    assert status == 200, body[:500]
    assert headers["Content-Type"] == "image/tiff"
    assert 'filename="001_00_7f00ff_global_subsetted.tif"' in headers["Content-Disposition"]
    check_masked(body, AREA, source)


async def test_shape_and_bbox_together_crop_to_both(mesh: Mesh, source) -> None:
    fields = [("granuleId", GLOBAL_GRANULE), ("subset", "lat(0:30)"), ("subset", "lon(0:30)")]
    status, _, body = await post(mesh, fields, (geojson(TRIANGLE), "application/geo+json", "t.geojson"))
    assert status == 200, body[:500]
    check_masked(body, TRIANGLE.intersection(box(0, 0, 30, 30)), source)


async def test_png_output(mesh: Mesh, source) -> None:
    fields = [("granuleId", GLOBAL_GRANULE), ("format", "image/png")]
    status, headers, body = await post(mesh, fields, (geojson(TRIANGLE), "application/geo+json", "t.geojson"))
    assert status == 200, body[:500]
    assert 'filename="001_00_7f00ff_global_subsetted.png"' in headers["Content-Disposition"]
    with open_image(body) as image:
        assert (image.width, image.height) == (300, 300)  # PNG has no georeferencing: 10..40 E, -10..20 N
        alpha = image.read(4)
    inside = geometry_mask([TRIANGLE], out_shape=(300, 300), transform=from_origin(10, 20, PIXEL, PIXEL), invert=True)
    window = rasterio.windows.from_bounds(*TRIANGLE.bounds, transform=source.transform).round_offsets().round_lengths()
    assert (alpha[inside] == source.read(4, window=window)[inside]).all()
    assert (alpha[~inside] == 0).all()


SEED_TIMES = 'time("2020-01-16T02:00:00Z":"2020-01-16T07:59:59Z")'  # africa, antarctica, asia_east


async def test_a_job_selects_the_granules_the_shape_touches(mesh: Mesh) -> None:
    # Africa and East Asia hold part of it; Antarctica's bbox misses it, so it is not selected.
    answer, _, body = await post(mesh, [("subset", SEED_TIMES)], (geojson(AREA), "application/geo+json", "a.json"))
    assert answer == 200, body[:500]
    job = await wait_for(mesh, json.loads(body)["jobID"], ("successful", "complete_with_errors", "failed"))
    assert job["status"] == "successful" and job["numInputGranules"] == 2
    data = [link for link in job["links"] if link["rel"] == "data"]
    assert sorted(link["title"] for link in data) == [
        "016_01_ff0000_africa_subsetted.tif", "016_03_ff0000_asia_east_subsetted.tif"
    ]
    for link in data:
        assert link["bbox"][0] >= AREA.bounds[0] - PIXEL and link["bbox"][2] <= AREA.bounds[2] + PIXEL


async def test_granules_are_selected_by_the_shape_not_its_bounds(mesh: Mesh) -> None:
    """An L whose bounds reach East Asia's granule while the L itself passes beside it: as CMR does with
    a shapefile, only the granule the shape touches (Africa) is selected, so the answer is synchronous."""
    shape = box(0, -20, 20, 90).union(box(0, 85, 100, 90))
    answer, headers, body = await post(mesh, [("subset", SEED_TIMES)], (geojson(shape), "application/geo+json", "l.json"))
    assert answer == 200, body[:500]
    assert 'filename="016_01_ff0000_africa_subsetted.tif"' in headers["Content-Disposition"]


@pytest.fixture
def client(secured: Mesh, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    monkeypatch.setenv("LOCALHOST_PORT", secured.url.rsplit(":", 1)[1])
    harmony = Client(env=Environment.LOCAL, token="alice-token", check_interval=0.1)
    yield harmony
    harmony.executor.shutdown(wait=False)


@pytest.mark.parametrize("suffix", ["geojson", "kml", "zip"])
async def test_harmony_py_shape(client: Client, source, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"area.{suffix}"
    path.write_bytes({"geojson": geojson(*AREA.geoms), "kml": kml(*AREA.geoms), "zip": zipped_shapefile(AREA)}[suffix])
    request = Request(collection=Collection(id=HARMONY_EXAMPLE), shape=str(path), granule_id=[GLOBAL_GRANULE])
    job_id = await asyncio.to_thread(client.submit, request)
    await asyncio.to_thread(client.wait_for_processing, job_id)
    status = await asyncio.to_thread(client.status, job_id)
    assert (status["status"], status["num_input_granules"]) == ("successful", 1)
    (tmp_path / "out").mkdir()
    futures = await asyncio.to_thread(lambda: list(client.download_all(job_id, directory=str(tmp_path / "out"))))
    files = [await asyncio.to_thread(future.result) for future in futures]
    assert [Path(file).name for file in files] == ["001_00_7f00ff_global_subsetted.tif"]
    check_masked(Path(files[0]).read_bytes(), AREA, source)


@pytest.mark.parametrize(
    ("upload", "fields", "status", "words"),
    [
        ((b'{"type": "FeatureCollection", "features": [', "application/geo+json", "a.geojson"), [], 400,
         "Error: The shapefile upload is not valid GeoJSON: "),
        ((geojson(Point(20, 0)), "application/geo+json", "a.geojson"), [("maxResults", "5")], 400,
         "send polygons or multipolygons only"),
        ((b"a,b\n", "text/csv", "a.csv"), [], 400, "of type text/csv is not a kind geomesh reads"),
        ((zipped_shapefile(TRIANGLE, parts=("dbf", "prj")), "application/zip", "a.zip"), [], 400,
         "holds no complete shapefile"),
        ((geojson(), "application/geo+json", "a.geojson"), [], 400, "it is empty"),
        # A shape away from the Africa granule...
        ((geojson(box(-150, -40, -140, -30)), "application/geo+json", "a.geojson"),
         [("granuleId", AFRICA_GRANULE)], 400, "Error: No matching granules found."),
        # ...or a frame around it, whose bounds cover it but whose polygon does not touch it.
        ((geojson(box(-60, -60, 80, 60).difference(box(-30, -50, 70, 40))), "application/geo+json", "a.geojson"),
         [("granuleId", AFRICA_GRANULE)], 400, "Error: No matching granules found."),
        ((geojson(TRIANGLE), "application/geo+json", "a.geojson"), [("subset", "lat(50:60)")], 400,
         "and the requested bounding box"),
    ],
)
async def test_bad_uploads_are_refused_before_any_job(
    mesh: Mesh, upload: tuple[bytes, str, str], fields: list[tuple[str, str]], status: int, words: str
) -> None:
    fields = fields or [("granuleId", GLOBAL_GRANULE)]
    if "does not intersect" not in words:  # only the transformer can tell that, after a job is made
        fields = fields + [("forceAsync", "true")]
    answer, headers, body = await post(mesh, fields, upload)
    assert answer == status, body[:500]
    assert headers["Content-Type"].startswith("application/json")
    error = json.loads(body)
    assert error["code"] == "harmony.RequestValidationError"
    assert words in error["description"]


async def test_too_many_vertices_is_413(mesh: Mesh) -> None:
    angles = np.linspace(0, 2 * np.pi, MAX_VERTICES + 10, endpoint=False)
    circle = Polygon(np.column_stack([20 + 10 * np.cos(angles), 10 * np.sin(angles)]))
    status, _, body = await post(mesh, [("granuleId", GLOBAL_GRANULE)], (geojson(circle), "application/geo+json", "c.geojson"))
    assert status == 413, body[:500]
    assert f"more than the {MAX_VERTICES} geomesh accepts" in json.loads(body)["description"]


async def test_oversized_upload_is_413(mesh: Mesh) -> None:
    content = b" " * (SHAPE_LIMIT + 1)
    status, _, body = await post(mesh, [("granuleId", GLOBAL_GRANULE)], (content, "application/geo+json", "big.geojson"))
    assert status == 413
    assert json.loads(body)["description"] == "Error: The shapefile upload is larger than 8 MiB"


# Each of these was a 500 ("internal error in Execute: RecursionError") from the scheduler.
@pytest.mark.parametrize(
    ("upload", "words"),
    [
        ((b'{"type": "Polygon", "coordinates": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/geo+json", "a.geojson"),
         f"nests arrays and objects 100001 levels deep, beyond the limit of {MAX_DEPTH}"),
        ((b'{"type": "Feature", "geometry": ' * 100_000 + b"null" + b"}" * 100_000, "application/geo+json", "a.geojson"),
         f"nests arrays and objects 100000 levels deep, beyond the limit of {MAX_DEPTH}"),
        ((b'{"type": "Polygon", "coordinates": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", "application/geo+json", "a.geojson"),
         f"nests arrays and objects 5001 levels deep, beyond the limit of {MAX_DEPTH}"),
        ((b"<kml><Document>" + b"<Folder>" * 100_000 + b"</Folder>" * 100_000 + b"</Document></kml>",
          "application/vnd.google-earth.kml+xml", "a.kml"), f"The KML nests elements more than {MAX_DEPTH} levels deep"),
    ],
    ids=["geojson coordinates 100000 deep", "geojson features 100000 deep", "geojson coordinates 5000 deep", "kml 100000 deep"],
)
async def test_deeply_nested_uploads_are_400s_naming_the_limit(mesh: Mesh, upload: tuple[bytes, str, str], words: str) -> None:
    status, headers, body = await post(mesh, [("granuleId", GLOBAL_GRANULE)], upload)
    assert status == 400, body[:500]
    error = json.loads(body)
    assert error["code"] == "harmony.RequestValidationError"
    assert words in error["description"]


async def test_a_multipart_body_nested_in_the_form_is_a_400(mesh: Mesh) -> None:
    """aiohttp skips a nested multipart body recursively, one level per nesting: refused at the first."""
    depth = 20_000
    body = b"".join(
        f"--b{n}\r\nContent-Type: multipart/mixed; boundary=b{n + 1}\r\n\r\n".encode() for n in range(depth)
    ) + b"".join(f"--b{n}--\r\n".encode() for n in reversed(range(depth + 1)))
    async with aiohttp.ClientSession() as session:
        async with session.post(
            mesh.rangeset(), data=body, headers={"Content-Type": "multipart/form-data; boundary=b0"}
        ) as response:
            assert response.status == 400, await response.text()
            assert "holds another multipart body" in (await response.json())["description"]
