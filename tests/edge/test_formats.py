"""Output formats of harmony_example through a real mesh: the seed's bbox crop as COG, PNG, GIF and JPEG."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import PIL.Image
import pytest
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import DatasetReader, MemoryFile

from tests.conftest import GLOBAL_GRANULE, Mesh
from tests.edge.test_coverages import get

SEED_BBOX = f"?granuleid={GLOBAL_GRANULE}&subset=lat(-45.75:-9)&subset=lon(110:156)"
# 0.1 degree pixels: 46 x 36.75 degrees, edges rounded to whole pixels.
SIZE = (460, 368)


def open_image(body: bytes) -> DatasetReader:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return MemoryFile(body).open()


@pytest.mark.parametrize(
    ("media_type", "extension", "driver", "count", "magic"),
    [
        ("image/tiff", "tif", "GTiff", 4, b"II*\x00"),
        ("image/png", "png", "PNG", 4, b"\x89PNG"),
        ("image/gif", "gif", "GIF", 1, b"GIF89a"),
        ("image/jpeg", "jpg", "JPEG", 3, b"\xff\xd8\xff"),
    ],
)
async def test_the_seeds_bbox_crop_in_each_format(
    mesh: Mesh, media_type: str, extension: str, driver: str, count: int, magic: bytes
) -> None:
    status, headers, body = await get(f"{mesh.rangeset()}{SEED_BBOX}&format={media_type}")
    assert status == 200, body
    assert headers["Content-Type"] == media_type
    assert f'filename="001_00_7f00ff_global_subsetted.{extension}"' in headers["Content-Disposition"]
    assert body.startswith(magic)
    with open_image(body) as image:
        assert image.driver == driver
        assert (image.width, image.height) == SIZE and image.count == count
        if media_type == "image/tiff":
            assert image.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            assert image.overviews(1) == []  # one 512-pixel tile holds it all
            assert image.crs.to_epsg() == 4326
            assert image.bounds == pytest.approx((110, -45.8, 156, -9), abs=1e-6)
            assert image.descriptions == ("red_var", "green_var", "blue_var", "alpha_var")
            assert image.colorinterp == (ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha)
            assert image.tags()["HARMONY_HEX_COLOR"] == "7f00ff"
        if media_type == "image/gif":
            assert image.colorinterp == (ColorInterp.palette,) and image.nodata == 255
            indexes = image.read(1)
            assert (indexes == 255).any() and (indexes != 255).any()  # sea is see-through, Australia is not
        if media_type == "image/jpeg":
            data = image.read()
            assert (data.min(axis=0) >= 245).any()  # white where the source is transparent
            assert (data.min(axis=0) < 200).any()  # the land colour


async def test_a_whole_granule_cog_has_overviews(mesh: Mesh) -> None:
    status, _, body = await get(f"{mesh.rangeset(variable='blue_var')}?granuleId={GLOBAL_GRANULE}&format=image/tiff")
    assert status == 200, body
    with open_image(body) as image:
        assert image.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert (image.width, image.height) == (3600, 1800) and image.overviews(1) == [2, 4, 8]
        assert image.bounds == pytest.approx((-180, -90, 180, 90))
        assert image.descriptions == ("blue_var",)


async def test_one_variable_as_jpeg_is_gray(mesh: Mesh) -> None:
    status, headers, body = await get(f"{mesh.rangeset(variable='red_var')}{SEED_BBOX}&format=image/jpeg")
    assert status == 200, body
    assert 'filename="001_00_7f00ff_global_red_var_subsetted.jpg"' in headers["Content-Disposition"]
    with open_image(body) as image:
        assert image.count == 1 and image.colorinterp == (ColorInterp.gray,)


async def test_the_reprojected_crop_as_gif(mesh: Mesh) -> None:
    status, headers, body = await get(f"{mesh.rangeset()}{SEED_BBOX}&outputCrs=EPSG:6933&width=200&format=image/gif")
    assert status == 200, body
    assert 'filename="001_00_7f00ff_global_regridded_subsetted.gif"' in headers["Content-Disposition"]
    with open_image(body) as image:
        assert image.count == 1 and image.width == 200


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        ("image/gif", "image/gif"),
        ("image/webp, image/jpeg;q=0.8, image/png;q=0.5", "image/jpeg"),
        ("image/png;q=0.4, image/gif;q=0.9", "image/gif"),
        ("image/*", "image/tiff"),
    ],
)
async def test_the_accept_header_chooses_the_format(mesh: Mesh, accept: str, media_type: str) -> None:
    status, headers, body = await get(f"{mesh.rangeset()}{SEED_BBOX}", headers={"Accept": accept})
    assert status == 200, body
    assert headers["Content-Type"] == media_type
    with open_image(body) as image:
        assert (image.width, image.height) == SIZE


async def test_an_unsupported_format_is_422(mesh: Mesh) -> None:
    status, _, body = await get(f"{mesh.rangeset()}{SEED_BBOX}", headers={"Accept": "application/x-zarr"})
    assert status == 422
    error = json.loads(body)
    assert error["code"] == "harmony.UnsupportedOperation"
    assert "supported formats are: image/gif, image/jpeg, image/png, image/tiff" in error["description"]
    status, _, body = await get(f"{mesh.rangeset()}{SEED_BBOX}&format=application/x-netcdf4")
    assert status == 422
    assert json.loads(body)["description"] == (
        "Error: the requested combination of operations: spatial subsetting and reformatting to application/x-netcdf4 on "
        "C1233800302-EEDTEST is unsupported; supported output formats are: image/gif, image/jpeg, image/png, image/tiff"
    )


async def test_a_transparent_gif_pixel_is_the_sea(mesh: Mesh) -> None:
    """The GIF's transparent pixels are where the COG's alpha is 0."""
    _, _, tiff = await get(f"{mesh.rangeset()}{SEED_BBOX}&format=image/tiff")
    _, _, gif = await get(f"{mesh.rangeset()}{SEED_BBOX}&format=image/gif")
    with open_image(tiff) as cog, open_image(gif) as image:
        np.testing.assert_array_equal(image.read(1) == 255, cog.read(4) == 0)


@pytest.mark.parametrize(
    ("media_type", "pillow_format", "mode"),
    [("image/png", "PNG", "RGBA"), ("image/gif", "GIF", "P"), ("image/jpeg", "JPEG", "RGB")],
)
async def test_pillow_opens_each_image_format(mesh: Mesh, media_type: str, pillow_format: str, mode: str) -> None:
    """Image viewers and notebooks open these with Pillow, not GDAL: it must decode them whole."""
    status, _, body = await get(f"{mesh.rangeset()}{SEED_BBOX}&format={media_type}")
    assert status == 200, body
    with PIL.Image.open(io.BytesIO(body)) as image:
        assert (image.format, image.mode, image.size) == (pillow_format, mode, SIZE)
        pixels = np.asarray(image.convert("RGBA"))
    with open_image(body) as reference:  # GDAL's decoding of the same bytes
        gdal_rgba = np.asarray(PIL.Image.fromarray(np.moveaxis(_as_rgba(reference), 0, -1)))
    if media_type == "image/jpeg":  # decoders differ (chroma upsampling) at sharp edges, nowhere else
        difference = np.abs(pixels.astype(int) - gdal_rgba.astype(int))
        assert difference.mean() < 1 and np.median(difference) == 0
    else:
        assert np.array_equal(pixels, gdal_rgba)


def _as_rgba(image: DatasetReader) -> np.ndarray:
    """A GDAL-decoded image as 4 x H x W RGBA, expanding a palette."""
    data = image.read()
    if image.colorinterp == (ColorInterp.palette,):
        table = image.colormap(1)
        lut = np.array([table.get(i, (0, 0, 0, 0)) for i in range(256)], dtype=np.uint8)
        rgba = np.moveaxis(lut[data[0]], -1, 0)
        if image.nodata is not None:
            rgba[3] = np.where(data[0] == image.nodata, 0, rgba[3])
        return rgba
    if data.shape[0] == 3:
        return np.concatenate([data, np.full((1, *data.shape[1:]), 255, np.uint8)])
    return data
