"""Reprojection and regridding in the gdal transformer, on a real gRPC server and small real GeoTIFFs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.io import MemoryFile
from rasterio.transform import from_origin

from edge import rangeset
from geomesh.errors import RequestValidationError
from geomesh.model import BBox
from geomesh.rpc import open_channel, rpc_errors
from geomesh.settings import TransformerSettings
from geomesh.v1 import request_pb2, transformer_pb2, transformer_pb2_grpc, types_pb2
from transformers.gdal.service import TransformerServer, serve
from transformers.grids import INTERPOLATIONS, target_crs

PROJ4_6933 = "+proj=cea +lon_0=0 +lat_ts=30 +x_0=0 +y_0=0 +ellps=WGS84 +towgs84=0,0,0,0,0,0,0 +units=m +no_defs"
EASE2 = pyproj.CRS.from_epsg(6933)


@pytest.fixture(scope="module")
def granules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("reproject")
    world = folder / "world.tif"
    data = np.random.default_rng(3).integers(1, 256, size=(4, 90, 180), dtype=np.uint8)
    with rasterio.open(
        world, "w", driver="GTiff", width=180, height=90, count=4, dtype="uint8",
        crs="EPSG:4326", transform=from_origin(-180, 90, 2, 2), nodata=0,
    ) as dst:
        dst.write(data)
        dst.descriptions = ("red_var", "green_var", "blue_var", "alpha_var")
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
        dst.update_tags(HARMONY_HEX_COLOR="7f00ff")
    utm = folder / "utm.tif"
    with rasterio.open(
        utm, "w", driver="GTiff", width=100, height=100, count=1, dtype="float32",
        crs="EPSG:32633", transform=from_origin(400_000, 5_000_000, 1000, 1000), nodata=-9999,
    ) as dst:
        dst.write(np.arange(100 * 100, dtype=np.float32).reshape(1, 100, 100))
        dst.set_band_description(1, "height")
    return {"world": world, "utm": utm}


@pytest.fixture(scope="module")
async def stub(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[transformer_pb2_grpc.TransformerStub]:
    settings = TransformerSettings(port=0, workers=2, scratch_dir=tmp_path_factory.mktemp("scratch"))
    running: TransformerServer = await serve(settings)
    async with open_channel(running.address, "transformer") as channel:
        yield transformer_pb2_grpc.TransformerStub(channel)
    await running.stop(0)


def work_item(path: Path, *, bbox: BBox | None = None, media_type: str = "image/tiff", **output: object) -> transformer_pb2.WorkItem:
    granule = types_pb2.Granule(
        id="G1-TEST", name=path.stem, links=[types_pb2.DataLink(href=path.as_uri(), media_type="image/tiff")]
    )
    item = transformer_pb2.WorkItem(
        request_id="r1", granule=granule, output=request_pb2.OutputOptions(format=media_type, **output)
    )
    if bbox is not None:
        item.bbox.CopyFrom(bbox.to_proto())
    return item


async def transform(
    stub: transformer_pb2_grpc.TransformerStub, item: transformer_pb2.WorkItem
) -> tuple[transformer_pb2.OutputHeader, bytes]:
    with rpc_errors():
        messages = [message async for message in stub.Transform(item, timeout=10)]
    return messages[0].header, b"".join(message.data for message in messages[1:])


async def test_every_form_of_ease_grid_2_gives_the_same_crs_and_grid(
    stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, Path]
) -> None:
    forms = [
        "EPSG:6933", PROJ4_6933, "http://www.opengis.net/def/crs/EPSG/0/6933", EASE2.to_wkt(),
    ]
    grids = []
    for form in forms:
        header, body = await transform(stub, work_item(granules["world"], crs=form))
        assert header.file_name == "world_regridded.tif"
        with MemoryFile(body).open() as dataset:
            assert pyproj.CRS.from_wkt(dataset.crs.to_wkt()).equals(EASE2)
            assert dataset.descriptions == ("red_var", "green_var", "blue_var", "alpha_var")
            assert list(dataset.colorinterp)[3] == ColorInterp.alpha
            assert dataset.tags()["HARMONY_HEX_COLOR"] == "7f00ff"
            assert dataset.nodata == 0
            grids.append((dataset.transform, dataset.shape))
            assert dataset.read(1).any()
        # The header's bbox is the output's WGS84 extent: the whole world here.
        assert header.bbox.west == pytest.approx(-180, abs=1) and header.bbox.east == pytest.approx(180, abs=1)
    assert all(grid == grids[0] for grid in grids)


async def test_source_grid_unchanged_when_nothing_to_do(
    stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, Path]
) -> None:
    header, body = await transform(stub, work_item(granules["world"], crs="CRS:84", interpolation="bilinear"))
    assert header.file_name == "world.tif"
    with MemoryFile(body).open() as dataset:
        assert dataset.shape == (90, 180)


async def test_scale_extent_sets_the_bounds(stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, Path]) -> None:
    extent = [-7_000_000, 1_000_000, 8_000_000, 6_000_000]
    _, body = await transform(stub, work_item(granules["world"], crs="EPSG:6933", scale_extent=extent))
    with MemoryFile(body).open() as dataset:
        xres, yres = dataset.res
        for edge, wanted, pixel in zip(dataset.bounds, extent, (xres, yres, xres, yres), strict=True):
            assert abs(edge - wanted) <= pixel


async def test_width_and_height(stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, Path]) -> None:
    _, body = await transform(stub, work_item(granules["world"], crs="EPSG:6933", width=120, height=50))
    with MemoryFile(body).open() as dataset:
        assert (dataset.width, dataset.height) == (120, 50)
    # One of them alone keeps the pixels square, as gdalwarp -ts 120 0 does.
    _, body = await transform(stub, work_item(granules["world"], crs="EPSG:6933", width=120))
    with MemoryFile(body).open() as dataset:
        assert dataset.width == 120
        assert dataset.res[0] == pytest.approx(dataset.res[1], rel=0.02)


async def test_scale_size_and_regrid_in_the_source_crs(
    stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, Path]
) -> None:
    _, body = await transform(stub, work_item(granules["world"], crs="EPSG:6933", scale_size=[200_000, 100_000]))
    with MemoryFile(body).open() as dataset:
        assert dataset.res == pytest.approx((200_000, 100_000))
    # No outputCrs: a regrid of the source's own CRS.
    header, body = await transform(stub, work_item(granules["world"], scale_size=[4, 4]))
    with MemoryFile(body).open() as dataset:
        assert dataset.crs.to_epsg() == 4326 and dataset.shape == (45, 90)
    assert header.file_name == "world_regridded.tif"


async def test_bilinear_keeps_nodata(stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, Path]) -> None:
    header, body = await transform(
        stub, work_item(granules["utm"], crs="EPSG:4326", interpolation="bilinear", width=64)
    )
    with MemoryFile(body).open() as dataset:
        assert dataset.crs.to_epsg() == 4326 and dataset.width == 64
        assert dataset.nodata == -9999 and dataset.descriptions == ("height",)
        data = dataset.read(1)
        assert (data == -9999).any()  # the rotated square leaves corners empty
        assert data[data != -9999].min() >= 0
    assert 13 < header.bbox.west < header.bbox.east < 15.5  # 400-500 km easting: west of 15 E


async def test_bbox_crop_comes_before_the_warp(stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, Path]) -> None:
    bbox = BBox(110, -46, 156, -10)
    header, body = await transform(stub, work_item(granules["world"], bbox=bbox, crs="EPSG:6933", width=100))
    assert header.file_name == "world_regridded_subsetted.tif"
    assert header.bbox.west == pytest.approx(110, abs=2) and header.bbox.east == pytest.approx(156, abs=2)
    with MemoryFile(body).open() as dataset:
        assert dataset.width == 100
    # A larger extent than the bbox: what lies outside the crop is nodata.
    _, body = await transform(
        stub, work_item(granules["world"], bbox=bbox, crs="EPSG:6933", scale_extent=[0, -6e6, 16e6, 0], width=80, height=30)
    )
    with MemoryFile(body).open() as dataset:
        band = dataset.read(1)
        assert band[:, :20].max() == 0 and band[:, 40:60].any()


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
async def test_png_of_a_reprojection(stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, Path]) -> None:
    header, body = await transform(stub, work_item(granules["world"], media_type="image/png", crs="EPSG:6933", width=90))
    assert header.file_name == "world_regridded.png"
    assert body.startswith(b"\x89PNG")
    with MemoryFile(body).open(driver="PNG") as image:
        assert (image.count, image.width) == (4, 90)


@pytest.mark.parametrize(
    ("output", "words"),
    [
        ({"crs": "EPSG:999999"}, 'query parameter "crs/outputCrs" could not be parsed.  Try an EPSG code or Proj4 string.'),
        ({"crs": "EPSG:6933", "interpolation": "smooth"}, 'value "smooth" is not supported; use one of: near, nearest'),
        ({"scale_size": [1, 1], "width": 10}, "cannot both be given"),
        ({"scale_extent": [5, 0, 1, 1]}, "xmin less than xmax"),
        ({"scale_size": [0, 1]}, "both sizes greater than 0"),
        ({"width": 0}, 'query parameter "width" should be between 1 and 32768'),
        ({"crs": "EPSG:6933", "scale_size": [1, 1]}, "above the limit of 32768 pixels a side"),
        ({"crs": "EPSG:6933", "width": 20000, "height": 20000}, "268435456 pixels in all"),
    ],
)
async def test_bad_grids_are_refused(
    stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, Path], output: dict[str, object], words: str
) -> None:
    with pytest.raises(RequestValidationError) as raised:
        await transform(stub, work_item(granules["world"], **output))
    assert words in str(raised.value)


def test_a_different_projection_is_not_renamed_to_an_epsg_code() -> None:
    assert target_crs(PROJ4_6933).to_epsg() == 6933
    assert target_crs("+proj=cea +lon_0=0 +lat_ts=45 +ellps=WGS84 +units=m +no_defs").to_epsg() is None


def test_edge_and_transformer_know_the_same_interpolations() -> None:
    assert tuple(INTERPOLATIONS) == rangeset.INTERPOLATIONS


@pytest.mark.parametrize("text", ["EPSG:4978", "+proj=geocent +datum=WGS84", "EPSG:5773", "EPSG:nope"])
def test_a_crs_no_grid_can_be_warped_to_is_a_request_error(text: str) -> None:
    """Geocentric and vertical CRSs, and unknown codes, sent straight to a transformer: a 400, not a GDAL failure."""
    with pytest.raises(RequestValidationError, match="could not be parsed"):
        target_crs(text)


ORTHO = "+proj=ortho +lon_0=-60"  # the hemisphere around 60 W: Australia is on its far side


async def test_an_area_the_output_crs_does_not_cover_is_a_request_error(
    stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, Path]
) -> None:
    """Was a 500: GDAL found no output grid ("Too many points (441 out of 441) failed to transform")."""
    with pytest.raises(RequestValidationError) as raised:
        await transform(stub, work_item(granules["world"], bbox=BBox(110, -45, 156, -9), crs=ORTHO))
    message = raised.value.message
    assert message.startswith("The requested area of granule G1-TEST (110,-46,156,-8 as west,south,east,north) cannot be "
                              "projected to the outputCrs +proj=ortho +lon_0=-60: that CRS covers only part of the Earth")
    assert "Subset to an area the CRS covers (e.g. subset=lat(south:north)&subset=lon(west:east))" in message
    assert "points" not in message


async def test_an_orthographic_view_of_the_world_has_the_bbox_of_its_data(
    stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, Path]
) -> None:
    """The grid's corners are off the Earth: GDAL's WGS84 bounds of it were a quarter of the view, or
    infinities (written into the job's links and STAC items); the source's bbox holds the output."""
    header, body = await transform(stub, work_item(granules["world"], crs=ORTHO))
    assert (header.bbox.west, header.bbox.south, header.bbox.east, header.bbox.north) == (-180, -90, 180, 90)
    with MemoryFile(body).open() as dataset:
        assert dataset.read(1).any()
    off_the_earth = work_item(granules["world"], crs=ORTHO, scale_extent=[7e6, 7e6, 8e6, 8e6])
    header, _ = await transform(stub, off_the_earth)
    assert (header.bbox.west, header.bbox.south, header.bbox.east, header.bbox.north) == (-180, -90, 180, 90)
    part = work_item(granules["world"], bbox=BBox(-100, -10, -20, 10), crs=ORTHO)
    header, _ = await transform(stub, part)
    bbox = (header.bbox.west, header.bbox.south, header.bbox.east, header.bbox.north)
    assert bbox == pytest.approx((-100, -10, -20, 10), abs=2)


def test_edges_on_earth() -> None:
    from transformers.grids import edges_on_earth

    ortho = target_crs(ORTHO)
    assert edges_on_earth(ortho, (-4e6, -4e6, 4e6, 4e6))
    assert not edges_on_earth(ortho, (-6.4e6, -6.4e6, 6.4e6, 6.4e6))  # the disc's bounding square
    assert edges_on_earth(target_crs("EPSG:6933"), (-17e6, -7e6, 17e6, 7e6))
