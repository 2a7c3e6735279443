"""The gdal transformer's Render (WMS GetMap) on a real gRPC server, drawing the demo granules."""

from __future__ import annotations

import json
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile

from geomesh.errors import (
    RequestValidationError,
    TransformError,
    UnsupportedOperationError,
)
from geomesh.model import BBox
from geomesh.rpc import open_channel, rpc_errors
from geomesh.settings import TransformerSettings
from geomesh.v1 import transformer_pb2, transformer_pb2_grpc, types_pb2
from transformers.gdal.grid import MapGrid, map_crs
from transformers.gdal.render import _placement, _ramp
from transformers.gdal.service import TransformerServer, serve

WORLD = (-180.0, -90.0, 180.0, 90.0)
WEB_MERCATOR_HALF = 20037508.342789244
WHITE = (255, 255, 255)
# Map pixels (row, col) of a 512x256 world map in EPSG:4326: over Congo (land), and over the
# Pacific and the South Atlantic (sea).
AFRICA, PACIFIC, SOUTH_ATLANTIC = (124, 284), (128, 42), (170, 230)
BRAZIL = (141, 163)


@pytest.fixture(scope="module")
def granules(demo_dir: Path) -> dict[str, types_pb2.Granule]:
    """The demo catalog's harmony_example granules by name, as the scheduler would send them."""
    catalog = json.loads((demo_dir / "catalog.json").read_text())
    records = next(c for c in catalog["collections"] if c["id"] == "C1233800302-EEDTEST")["granules"]
    return {
        record["name"]: types_pb2.Granule(
            id=record["id"],
            name=record["name"],
            bbox=BBox(*record["bbox"]).to_proto(),
            links=[
                types_pb2.DataLink(href=(demo_dir / link["href"]).as_uri(), media_type=link["type"]) for link in record["links"]
            ],
        )
        for record in records
    }


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[TransformerServer]:
    running = await serve(TransformerSettings(port=0, workers=2, open_datasets=8))
    yield running
    await running.stop(0)


@pytest.fixture(scope="module")
async def stub(server: TransformerServer) -> AsyncIterator[transformer_pb2_grpc.TransformerStub]:
    async with open_channel(server.address, "transformer") as channel:
        yield transformer_pb2_grpc.TransformerStub(channel)


def map_request(
    *granules: types_pb2.Granule,
    bounds: tuple[float, float, float, float] = WORLD,
    width: int = 512,
    height: int = 256,
    crs: str = "EPSG:4326",
    media_type: str = "image/png",
    **fields: object,
) -> transformer_pb2.RenderRequest:
    min_x, min_y, max_x, max_y = bounds
    return transformer_pb2.RenderRequest(
        request_id="r1", granules=granules, crs=crs, min_x=min_x, min_y=min_y, max_x=max_x, max_y=max_y,
        width=width, height=height, format=media_type, **fields,
    )


async def get_map(
    stub: transformer_pb2_grpc.TransformerStub, request: transformer_pb2.RenderRequest
) -> tuple[transformer_pb2.OutputHeader, bytes]:
    with rpc_errors():
        rendered = await stub.Render(request, timeout=10)
    assert len(rendered.content) == rendered.header.size_bytes
    return rendered.header, rendered.content


def decode(content: bytes) -> tuple[np.ndarray, dict[str, object]]:
    """Pixels (bands, rows, cols) and a few facts of an encoded image, read with GDAL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile(content) as memory, memory.open() as image:
            facts = {"driver": image.driver, "crs": image.crs, "bounds": image.bounds, "nodata": image.nodata}
            if image.driver == "GIF":
                facts["colormap"] = image.colormap(1)
            return image.read(), facts


def source_pixel(granule: types_pb2.Granule, lon: float, lat: float) -> tuple[int, ...]:
    with rasterio.open(granule.links[0].href.removeprefix("file://")) as src:
        row, col = src.index(lon, lat)
        return tuple(int(v) for v in src.read(window=((row, row + 1), (col, col + 1)))[:, 0, 0])


def map_pixel_centre(
    pixel: tuple[int, int], bounds: tuple[float, float, float, float], size: tuple[int, int]
) -> tuple[float, float]:
    (row, col), (width, height) = pixel, size
    min_x, min_y, max_x, max_y = bounds
    return min_x + (col + 0.5) * (max_x - min_x) / width, max_y - (row + 0.5) * (max_y - min_y) / height


def rgb(pixels: np.ndarray, pixel: tuple[int, int]) -> tuple[int, ...]:
    return tuple(int(v) for v in pixels[:3, pixel[0], pixel[1]])


async def test_png_of_the_world_is_the_source_sampled_at_pixel_centres(
    stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, types_pb2.Granule]
) -> None:
    header, content = await get_map(stub, map_request(granules["001_00_7f00ff_global"]))
    assert (header.file_name, header.media_type) == ("map.png", "image/png")
    assert BBox.from_proto(header.bbox) == BBox(*WORLD)
    assert content.startswith(b"\x89PNG")
    pixels, facts = decode(content)
    assert facts["driver"] == "PNG" and pixels.shape == (3, 256, 512)

    # Nearest neighbour at each map pixel's centre, read from the finest overview still no coarser
    # than the map: 0.703125 degree map pixels over the 4x overview's 0.4 degree ones.
    with rasterio.open(granules["001_00_7f00ff_global"].links[0].href.removeprefix("file://"), overview_level=0) as src:
        assert src.shape == (450, 900)
        source = src.read()
    rows = ((np.arange(256) + 0.5) * 450 / 256).astype(int)
    cols = ((np.arange(512) + 0.5) * 900 / 512).astype(int)
    sampled = source[:, rows][:, :, cols]
    expected = np.where(sampled[3] > 0, sampled[:3], np.array(WHITE, dtype=np.uint8)[:, None, None])
    np.testing.assert_array_equal(pixels, expected)

    red, green, blue = rgb(pixels, AFRICA)  # land, in the day's colour 7f00ff, shaded
    assert green == 0 and 0 < red < blue
    assert rgb(pixels, PACIFIC) == WHITE


async def test_transparent_background_and_bgcolor(
    stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, types_pb2.Granule]
) -> None:
    world = granules["001_00_7f00ff_global"]
    _, clear = await get_map(stub, map_request(world, transparent=True))
    pixels, _ = decode(clear)
    assert pixels.shape == (4, 256, 512)
    assert pixels[3][PACIFIC] == 0 and pixels[3][AFRICA] == 255

    _, coloured = await get_map(stub, map_request(world, bgcolor="0x102030"))
    opaque, _ = decode(coloured)
    assert opaque.shape == (3, 256, 512)
    assert rgb(opaque, PACIFIC) == (0x10, 0x20, 0x30)
    assert rgb(opaque, AFRICA) == rgb(pixels, AFRICA)


async def test_crs84_and_epsg4326_draw_the_same_map(
    stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, types_pb2.Granule]
) -> None:
    africa = (-20.0, -40.0, 55.0, 38.0)  # x first (longitude) in both: the caller normalised axis order
    world = granules["001_00_7f00ff_global"]
    _, epsg = await get_map(stub, map_request(world, bounds=africa, crs="EPSG:4326"))
    _, crs84 = await get_map(stub, map_request(world, bounds=africa, crs="CRS:84"))
    assert epsg == crs84
    pixels, _ = decode(epsg)
    lon, lat = map_pixel_centre((130, 256), africa, (512, 256))
    assert rgb(pixels, (130, 256)) == source_pixel(world, lon, lat)[:3]


async def test_web_mercator_tile(
    stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, types_pb2.Granule]
) -> None:
    # Zoom 2, column 2, row 1: Europe, Africa's north, the Middle East (0..90 E, 0..66.5 N).
    size = WEB_MERCATOR_HALF / 2
    bounds = (0.0, 0.0, size, size)
    world = granules["001_00_7f00ff_global"]
    header, content = await get_map(stub, map_request(world, bounds=bounds, crs="EPSG:3857", width=256, height=256))
    got = BBox.from_proto(header.bbox)
    assert (got.west, got.south, got.east) == pytest.approx((0, 0, 90)) and got.north == pytest.approx(66.513, abs=1e-3)
    pixels, _ = decode(content)
    assert pixels.shape == (3, 256, 256)

    # Every pixel against the source sampled at the pixel centre, projected independently (full
    # resolution: the tile's 0.35 degree pixels are finer than the 4x overview's 0.4 degree ones).
    with rasterio.open(world.links[0].href.removeprefix("file://")) as src:
        source = src.read()
    centres = np.meshgrid(*(np.linspace(size / 512, size - size / 512, 256),) * 2)
    lon, lat = pyproj.Transformer.from_crs(3857, 4326, always_xy=True).transform(centres[0], centres[1][::-1])
    cols, rows = np.floor((lon + 180) * 10).astype(int), np.floor((90 - lat) * 10).astype(int)
    sampled = source[:, rows, cols]
    expected = np.where(sampled[3] > 0, sampled[:3], np.array(WHITE, dtype=np.uint8)[:, None, None])
    assert np.mean(pixels != expected) < 1e-3  # only pixel centres within rounding of an edge may differ
    assert (pixels != 255).any() and (pixels == 255).all(axis=0).any()  # land and sea both on the tile


async def test_a_web_mercator_bbox_far_off_the_earth_reads_a_small_window(
    stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, types_pb2.Granule]
) -> None:
    """Such a BBOX wraps longitudes column by column; the window once spanned the wrapped ones too
    (1.2 billion pixels wide, read at full size: 10 s and gigabytes per granule). Found probing WMS by hand alongside schemathesis."""
    world = granules["001_00_7f00ff_global"]
    with rasterio.open(world.links[0].href.removeprefix("file://")) as src:
        grid = MapGrid(map_crs("EPSG:3857"), (-1e30, -1e30, 1e30, 1e30), 10, 10)
        placement = _placement(grid, src.crs.to_wkt(), src.transform, src.width, src.height, tuple(src.overviews(1)))
        assert placement is not None
        assert placement.window.width <= src.width and placement.window.height <= src.height
    header, content = await get_map(
        stub, map_request(world, bounds=(-1e30, -1e30, 1e30, 1e30), crs="EPSG:3857", width=10, height=10)
    )
    assert decode(content)[0].shape == (3, 10, 10)


async def test_last_granule_is_drawn_on_top(
    stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, types_pb2.Granule]
) -> None:
    world, africa = granules["001_00_7f00ff_global"], granules["002_01_3200ff_africa"]
    africa_centre = map_pixel_centre(AFRICA, WORLD, (512, 256))
    brazil = map_pixel_centre(BRAZIL, WORLD, (512, 256))

    _, content = await get_map(stub, map_request(world, africa))
    pixels, _ = decode(content)
    assert rgb(pixels, AFRICA) == source_pixel(africa, *africa_centre)[:3]
    assert rgb(pixels, BRAZIL) == source_pixel(world, *brazil)[:3]  # outside the Africa granule
    assert source_pixel(africa, *africa_centre)[:3] != source_pixel(world, *africa_centre)[:3]

    _, content = await get_map(stub, map_request(africa, world))
    pixels, _ = decode(content)
    assert rgb(pixels, AFRICA) == source_pixel(world, *africa_centre)[:3]


async def test_one_variable_is_drawn_on_a_colour_ramp(
    stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, types_pb2.Granule]
) -> None:
    world = granules["001_00_7f00ff_global"]
    _, content = await get_map(stub, map_request(world, variables=["blue_var"]))
    ramped, _ = decode(content)
    _, content = await get_map(stub, map_request(world))
    coloured, _ = decode(content)
    assert rgb(ramped, PACIFIC) == WHITE
    land = ~(coloured == 255).all(axis=0)
    position = {tuple(colour): index for index, colour in enumerate(_ramp().tolist())}
    steps = [position[tuple(colour)] for colour in ramped[:, land].T.tolist()]  # KeyError: off the ramp
    assert len(set(steps)) >= 10
    # Higher values further along the ramp.
    blue = coloured[2][land]
    order = np.argsort(blue, kind="stable")
    assert np.all(np.diff(np.array(steps)[order]) >= 0)


async def test_three_variables_choose_the_channels(
    stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, types_pb2.Granule]
) -> None:
    world = granules["001_00_7f00ff_global"]
    _, content = await get_map(stub, map_request(world, variables=["blue_var", "red_var", "blue_var"]))
    pixels, _ = decode(content)
    red, _, blue = source_pixel(world, *map_pixel_centre(AFRICA, WORLD, (512, 256)))[:3]
    assert rgb(pixels, AFRICA) == (blue, red, blue)


async def test_jpeg(stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, types_pb2.Granule]) -> None:
    request = map_request(granules["001_00_7f00ff_global"], media_type="image/jpeg", transparent=True)
    header, content = await get_map(stub, request)
    assert (header.file_name, header.media_type) == ("map.jpg", "image/jpeg")
    pixels, facts = decode(content)
    assert facts["driver"] == "JPEG" and pixels.shape == (3, 256, 512)
    assert all(value > 240 for value in rgb(pixels, PACIFIC))  # no transparency in JPEG: the background


async def test_gif_with_a_transparent_index(
    stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, types_pb2.Granule]
) -> None:
    world = granules["001_00_7f00ff_global"]
    _, png = await get_map(stub, map_request(world))
    header, content = await get_map(stub, map_request(world, media_type="image/gif", transparent=True))
    assert (header.file_name, header.media_type) == ("map.gif", "image/gif")
    assert content.startswith(b"GIF8")
    pixels, facts = decode(content)
    assert facts["driver"] == "GIF" and pixels.shape == (1, 256, 512)
    assert pixels[0][PACIFIC] == facts["nodata"]
    colour = facts["colormap"][int(pixels[0][AFRICA])][:3]  # type: ignore[index]
    expected = rgb(decode(png)[0], AFRICA)
    assert all(abs(a - b) <= 4 for a, b in zip(colour, expected, strict=True))  # 6-bit bins, drawn in their mean


async def test_geotiff_is_georeferenced(
    stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, types_pb2.Granule]
) -> None:
    size = WEB_MERCATOR_HALF / 2
    bounds = (0.0, 0.0, size, size)
    request = map_request(
        granules["001_00_7f00ff_global"], bounds=bounds, crs="EPSG:3857", width=256, height=256,
        media_type="image/tiff", transparent=True,
    )
    header, content = await get_map(stub, request)
    assert (header.file_name, header.media_type) == ("map.tif", "image/tiff")
    pixels, facts = decode(content)
    assert facts["driver"] == "GTiff" and pixels.shape == (4, 256, 256)
    assert facts["crs"].to_epsg() == 3857  # type: ignore[attr-defined]
    assert tuple(facts["bounds"]) == pytest.approx(bounds)  # type: ignore[arg-type]
    assert set(np.unique(pixels[3])) == {0, 255}


async def test_granules_off_the_map_are_not_opened(
    stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, types_pb2.Granule], tmp_path: Path
) -> None:
    missing = types_pb2.Granule(
        id="G-missing", bbox=BBox(100, -50, 160, -10).to_proto(),
        links=[types_pb2.DataLink(href=(tmp_path / "missing.tif").as_uri())],
    )
    africa = (-20.0, -40.0, 55.0, 38.0)
    _, content = await get_map(stub, map_request(missing, granules["001_01_7f00ff_africa"], bounds=africa))
    assert decode(content)[0].shape == (3, 256, 512)

    pacific = (-170.0, -30.0, -100.0, 30.0)
    africa_granule = types_pb2.Granule()
    africa_granule.CopyFrom(granules["001_01_7f00ff_africa"])
    africa_granule.ClearField("bbox")  # opened, found to miss the map, not read
    _, content = await get_map(stub, map_request(africa_granule, bounds=pacific))
    assert (decode(content)[0] == 255).all()

    missing.ClearField("bbox")  # no bbox: it must be opened, and cannot be
    with pytest.raises(TransformError, match="G-missing"):
        await get_map(stub, map_request(missing, bounds=africa))


async def test_projected_float_source_with_nodata_on_a_ramp(
    stub: transformer_pb2_grpc.TransformerStub, tmp_path: Path
) -> None:
    """A UTM granule of float values with nodata and NaN, drawn on a geographic map."""
    path = tmp_path / "utm.tif"
    values = np.arange(100 * 100, dtype=np.float32).reshape(100, 100)
    values[:20, :20] = -9999
    values[50, 50] = np.nan
    transform = Affine(1000, 0, 400_000, 0, -1000, 5_000_000)
    with rasterio.open(
        path, "w", driver="GTiff", width=100, height=100, count=1, dtype="float32", crs="EPSG:32633",
        transform=transform, nodata=-9999,
    ) as dst:
        dst.write(values, 1)
        dst.set_band_description(1, "height")
    granule = types_pb2.Granule(id="G-utm", links=[types_pb2.DataLink(href=path.as_uri())])
    bounds = (13.6, 44.2, 15.0, 45.2)  # around the granule, which spans about 13.7-15.0 E, 44.2-45.1 N
    _, content = await get_map(
        stub, map_request(granule, bounds=bounds, width=280, height=200, variables=["height"], transparent=True)
    )
    pixels, _ = decode(content)

    # Which map pixels should be drawn: their centres, projected, on a valid source pixel.
    grid = MapGrid(map_crs("EPSG:4326"), bounds, 280, 200)
    lon, lat = np.meshgrid(*grid.centres())
    x, y = pyproj.Transformer.from_crs(4326, 32633, always_xy=True).transform(lon, lat)
    col, row = np.floor((x - 400_000) / 1000).astype(int), np.floor((5_000_000 - y) / 1000).astype(int)
    inside = (col >= 0) & (col < 100) & (row >= 0) & (row < 100)
    drawn = np.zeros(inside.shape, dtype=bool)
    drawn[inside] = np.isfinite(values[row[inside], col[inside]]) & (values[row[inside], col[inside]] != -9999)
    assert np.mean((pixels[3] == 255) != drawn) < 0.002  # a centre within rounding of an edge may differ
    assert 0.3 < drawn.mean() < 0.9

    position = {tuple(colour): index for index, colour in enumerate(_ramp().tolist())}
    steps = np.array([position[tuple(colour)] for colour in pixels[:3, pixels[3] == 255].T.tolist()])
    assert steps.min() <= 5 and steps.max() >= 250  # the valid values span the whole ramp


async def test_a_world_map_in_robinson(
    stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, types_pb2.Granule]
) -> None:
    """The map's corners lie off the Earth: its WGS84 extent is the globe, and land is drawn."""
    bounds = (-1.8e7, -9e6, 1.8e7, 9e6)
    header, content = await get_map(
        stub, map_request(granules["001_00_7f00ff_global"], bounds=bounds, crs="ESRI:54030", width=400, height=200)
    )
    assert BBox.from_proto(header.bbox) == BBox(*WORLD)
    pixels, _ = decode(content)
    assert 0.1 < (pixels != 255).any(axis=0).mean() < 0.5


async def test_a_large_map_comes_whole(
    stub: transformer_pb2_grpc.TransformerStub, granules: dict[str, types_pb2.Granule]
) -> None:
    request = map_request(granules["001_00_7f00ff_global"], width=2048, height=1024, media_type="image/tiff")
    header, content = await get_map(stub, request)
    assert header.size_bytes == len(content) > 64 * 1024
    assert decode(content)[0].shape == (3, 1024, 2048)


@pytest.mark.parametrize(
    ("fields", "error", "words"),
    [
        ({"width": 0}, RequestValidationError, "width must be 1 to 4096 pixels, not 0"),
        ({"height": 4097}, RequestValidationError, "height must be 1 to 4096 pixels, not 4097"),
        ({"media_type": "image/bmp"}, UnsupportedOperationError, "image/png, image/jpeg, image/gif, image/tiff"),
        ({"variables": ["purple_var"]}, RequestValidationError, "purple_var (its variables: red_var, green_var"),
        ({"variables": ["red_var", "green_var"]}, RequestValidationError, "one variable (on a colour ramp) or three"),
        ({"crs": "EPSG:999999"}, RequestValidationError, "EPSG:999999"),
        ({"crs": ""}, RequestValidationError, "names no CRS"),
        ({"bounds": (10.0, 0.0, -10.0, 5.0)}, RequestValidationError, "min_x < max_x"),
        ({"bgcolor": "red"}, RequestValidationError, "0xRRGGBB"),
        ({"style": "fancy"}, RequestValidationError, "Style 'fancy' is not defined"),
    ],
)
async def test_errors(
    stub: transformer_pb2_grpc.TransformerStub,
    granules: dict[str, types_pb2.Granule],
    fields: dict[str, object],
    error: type[Exception],
    words: str,
) -> None:
    with pytest.raises(error) as raised:
        await get_map(stub, map_request(granules["001_00_7f00ff_global"], **fields))  # type: ignore[arg-type]
    assert type(raised.value) is error
    assert words in str(raised.value)


@pytest.mark.parametrize(
    ("crs", "bounds"),
    [
        ("EPSG:3413", (-4e6, -4e6, 4e6, 4e6)),  # the North Pole in the middle, the antimeridian a seam
        ("EPSG:32633", (2e5, 4e6, 8e5, 6e6)),
        ("ESRI:54030", (-1.7e7, -8.6e6, 1.7e7, 8.6e6)),  # Robinson: corners off the Earth
    ],
)
def test_interpolated_pixel_positions_are_within_a_quarter_pixel(
    crs: str, bounds: tuple[float, float, float, float]
) -> None:
    """The lattice shortcut of MapGrid.source_coordinates, checked against every pixel projected exactly."""
    grid = MapGrid(map_crs(crs), bounds, 400, 300)
    x, y = np.broadcast_arrays(*grid.source_coordinates(map_crs("EPSG:4326")))
    centres = np.meshgrid(*grid.centres())
    exact = pyproj.Transformer.from_crs(grid.crs, map_crs("EPSG:4326"), always_xy=True).transform(*centres)
    assert np.array_equal(np.isfinite(x), np.isfinite(exact[0]))
    # Back on the map, the interpolated source position lies within a quarter pixel of the centre.
    back = pyproj.Transformer.from_crs(map_crs("EPSG:4326"), grid.crs, always_xy=True).transform(x, y)
    pixel = (bounds[2] - bounds[0]) / 400
    on_earth = np.isfinite(x)
    error = np.hypot(back[0] - centres[0], back[1] - centres[1])[on_earth] / pixel
    assert on_earth.mean() > 0.5 and error.max() <= 0.25 + 1e-6
