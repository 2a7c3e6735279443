"""The gdal transformer's output formats (COG, JPEG, GIF, PNG) on small real GeoTIFFs made here."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import DatasetReader
from rasterio.transform import from_origin

from geomesh.errors import RequestValidationError
from geomesh.model import BBox
from transformers.gdal.datasets import DatasetPool
from transformers.gdal.subset import SubsetRequest, subset
from transformers.serving import FileOutput
from transformers.sources import Source

RGBA = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
# Four flat colours, one per quadrant; the top-left quadrant is transparent.
COLOURS = [(200, 30, 40), (20, 180, 60), (10, 40, 220), (250, 250, 0)]


def quadrants(height: int, width: int) -> np.ndarray:
    """(4, height, width) RGBA: flat colours by quadrant, alpha 0 in the top-left one."""
    data = np.zeros((4, height, width), dtype=np.uint8)
    half_y, half_x = height // 2, width // 2
    for number, (rows, cols) in enumerate(
        [(slice(0, half_y), slice(0, half_x)), (slice(0, half_y), slice(half_x, None)),
         (slice(half_y, None), slice(0, half_x)), (slice(half_y, None), slice(half_x, None))]
    ):
        data[:3, rows, cols] = np.array(COLOURS[number], dtype=np.uint8)[:, None, None]
        data[3, rows, cols] = 0 if number == 0 else 255
    return data


@pytest.fixture(scope="module")
def rgba_tif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1024 x 512 pixels of 0.25 degree: large enough for one COG overview level (512-pixel tiles)."""
    path = tmp_path_factory.mktemp("granules") / "rgba.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=1024, height=512, count=4, dtype="uint8",
        crs="EPSG:4326", transform=from_origin(-128, 64, 0.25, 0.25),
    ) as dst:
        dst.write(quadrants(512, 1024))
        dst.descriptions = ("red_var", "green_var", "blue_var", "alpha_var")
        dst.colorinterp = RGBA
        dst.update_tags(HARMONY_HEX_COLOR="7f00ff")
        dst.update_tags(2, note="green")
        dst.set_band_unit(1, "DN")
    return path


@pytest.fixture(scope="module")
def float_tif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two float bands without colour interpretation, with nodata, scale and offset."""
    path = tmp_path_factory.mktemp("granules") / "float.tif"
    data = np.linspace(0, 1000, 2 * 64 * 64, dtype=np.float32).reshape(2, 64, 64)
    data[:, 0, 0] = -9999
    with rasterio.open(
        path, "w", driver="GTiff", width=64, height=64, count=2, dtype="float32",
        crs="EPSG:32633", transform=from_origin(400_000, 5_000_000, 1000, 1000), nodata=-9999,
    ) as dst:
        dst.write(data)
        dst.descriptions = ("t1", "t2")
        dst.scales = (0.5, 0.5)
        dst.offsets = (10, 10)
    return path


@pytest.fixture(scope="module")
def palette_tif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("granules") / "classes.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=600, height=600, count=1, dtype="uint8",
        crs="EPSG:4326", transform=from_origin(0, 60, 0.1, 0.1),
    ) as dst:
        dst.write((np.arange(600 * 600) % 3).astype(np.uint8).reshape(1, 600, 600))
        dst.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 0, 0, 255), 2: (0, 0, 255, 255)})
    return path


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """Each output is written here; nothing else (no intermediate, no sidecar) may stay behind."""
    yield tmp_path
    left = [p.name for p in tmp_path.iterdir()]
    assert all(name.startswith("geomesh-gdal-") and ".part" not in name and name.endswith((".gif", ".jpg", ".png", ".tif"))
               for name in left), left


@pytest.fixture(scope="module")
def pool() -> DatasetPool:
    return DatasetPool(4)


def run(pool: DatasetPool, scratch: Path, path: Path, media_type: str, variables: tuple[str, ...] = (),
        bbox: BBox | None = None) -> FileOutput:
    request = SubsetRequest("G1", path.name, Source("G1", path.as_uri()), media_type, variables, bbox)
    return subset(request, pool, scratch)


def read(result: FileOutput) -> DatasetReader:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(result.path)


def test_tiff_is_a_cog_with_overviews_and_the_metadata_kept(pool: DatasetPool, scratch: Path, rgba_tif: Path) -> None:
    result = run(pool, scratch, rgba_tif, "image/tiff")
    assert result.media_type == "image/tiff" and result.file_name == "rgba.tif"
    with read(result) as out, rasterio.open(rgba_tif) as src:
        assert out.driver == "GTiff"
        assert out.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert out.compression.name == "deflate"
        assert out.block_shapes[0] == (512, 512)
        assert out.overviews(1) == [2]
        assert (out.crs, out.transform, out.shape) == (src.crs, src.transform, src.shape)
        assert out.descriptions == src.descriptions
        assert out.colorinterp == tuple(RGBA)
        assert out.tags()["HARMONY_HEX_COLOR"] == "7f00ff" and out.tags(2)["note"] == "green"
        assert out.units[0] == "DN"
        np.testing.assert_array_equal(out.read(), src.read())


def test_a_small_cog_has_no_overviews(pool: DatasetPool, scratch: Path, rgba_tif: Path) -> None:
    result = run(pool, scratch, rgba_tif, "image/tiff", ("green_var",), BBox(-100, 0, -80, 20))
    with read(result) as out:
        assert out.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert (out.count, out.width, out.height) == (1, 80, 80) and out.overviews(1) == []
        assert out.descriptions == ("green_var",) and out.bounds == pytest.approx((-100, 0, -80, 20))


def test_cog_keeps_nodata_scale_offset_and_floats(pool: DatasetPool, scratch: Path, float_tif: Path) -> None:
    with read(run(pool, scratch, float_tif, "image/tiff")) as out, rasterio.open(float_tif) as src:
        assert out.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert out.crs.to_epsg() == 32633 and out.nodata == -9999 and out.dtypes == ("float32", "float32")
        assert out.scales == (0.5, 0.5) and out.offsets == (10, 10)
        np.testing.assert_array_equal(out.read(), src.read())


def test_cog_keeps_a_palette_with_nearest_overviews(pool: DatasetPool, scratch: Path, palette_tif: Path) -> None:
    with read(run(pool, scratch, palette_tif, "image/tiff")) as out:
        assert out.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and out.overviews(1) == [2]
        assert out.colormap(1)[1] == (255, 0, 0, 255)
        # Nearest keeps class values; an average would make new ones.
        assert set(np.unique(out.read(1, out_shape=(300, 300)))) <= {0, 1, 2}


def test_jpeg_is_rgb_with_white_where_transparent(pool: DatasetPool, scratch: Path, rgba_tif: Path) -> None:
    result = run(pool, scratch, rgba_tif, "image/jpeg")
    assert result.media_type == "image/jpeg" and result.file_name == "rgba.jpg"
    assert result.path.read_bytes()[:3] == b"\xff\xd8\xff"
    with read(result) as out:
        assert out.driver == "JPEG" and (out.count, out.width, out.height) == (3, 1024, 512)
        data = out.read().astype(int)
    assert (data[:, 50:200, 50:400] >= 250).all()  # transparent quadrant
    for (rows, cols), colour in zip([((300, 450), (50, 400)), ((50, 200), (600, 1000))], [COLOURS[2], COLOURS[1]],
                                    strict=True):
        block = data[:, rows[0]:rows[1], cols[0]:cols[1]]
        assert np.abs(block - np.array(colour)[:, None, None]).max() <= 8  # quality 85 on flat colour


def test_jpeg_of_one_variable_is_gray(pool: DatasetPool, scratch: Path, rgba_tif: Path) -> None:
    with read(run(pool, scratch, rgba_tif, "image/jpeg", ("blue_var",))) as out:
        assert out.count == 1 and out.colorinterp == (ColorInterp.gray,)
        assert abs(int(out.read(1)[400, 200]) - COLOURS[2][2]) <= 4


def test_jpeg_stretches_floats_and_rejects_two_plain_variables(
    pool: DatasetPool, scratch: Path, float_tif: Path
) -> None:
    with read(run(pool, scratch, float_tif, "image/jpeg", ("t2",))) as out:
        data = out.read(1)
        assert out.count == 1 and data.dtype == np.uint8 and data.max() >= 250
    with pytest.raises(RequestValidationError, match="JPEG shows one variable .gray. or three"):
        run(pool, scratch, float_tif, "image/jpeg")


def test_gif_is_one_palette_band_with_a_transparent_index(pool: DatasetPool, scratch: Path, rgba_tif: Path) -> None:
    result = run(pool, scratch, rgba_tif, "image/gif", bbox=BBox(-128, -64, 128, 64))
    assert result.media_type == "image/gif" and result.file_name == "rgba_subsetted.gif"
    assert result.path.read_bytes()[:6] == b"GIF89a"
    with read(result) as out:
        assert out.driver == "GIF" and out.count == 1 and out.colorinterp == (ColorInterp.palette,)
        indexes, colormap = out.read(1), out.colormap(1)
        assert out.nodata == 255
    assert (indexes[:256, :512] == 255).all()
    assert (indexes[256:, :512] != 255).all() and (indexes[:, 512:] != 255).all()
    # Four flat colours fit the palette exactly.
    assert colormap[int(indexes[0, 1000])][:3] == COLOURS[1]
    assert colormap[int(indexes[500, 10])][:3] == COLOURS[2]
    assert colormap[int(indexes[500, 1000])][:3] == COLOURS[3]


def test_gif_of_one_variable_keeps_its_palette_or_gray_levels(
    pool: DatasetPool, scratch: Path, palette_tif: Path, rgba_tif: Path
) -> None:
    with read(run(pool, scratch, palette_tif, "image/gif")) as out, rasterio.open(palette_tif) as src:
        assert out.count == 1 and out.nodata is None
        np.testing.assert_array_equal(out.read(1), src.read(1))
        assert out.colormap(1)[1][:3] == (255, 0, 0)
    with read(run(pool, scratch, rgba_tif, "image/gif", ("red_var",))) as out, rasterio.open(rgba_tif) as src:
        np.testing.assert_array_equal(out.read(1), src.read(1))
        assert out.colormap(1)[200][:3] == (200, 200, 200)


def test_png_still_writes_the_bands_as_given(pool: DatasetPool, scratch: Path, rgba_tif: Path) -> None:
    with read(run(pool, scratch, rgba_tif, "image/png")) as out, rasterio.open(rgba_tif) as src:
        assert out.driver == "PNG" and out.count == 4
        np.testing.assert_array_equal(out.read(), src.read())


@pytest.mark.parametrize("media_type", ["image/jpeg", "image/gif", "image/png"])
def test_images_hold_at_most_four_variables(pool: DatasetPool, scratch: Path, tmp_path_factory: pytest.TempPathFactory,
                                            media_type: str) -> None:
    path = tmp_path_factory.mktemp("five") / "five.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=5, dtype="uint8",
                       crs="EPSG:4326", transform=from_origin(0, 8, 1, 1)) as dst:
        dst.write(np.ones((5, 8, 8), dtype=np.uint8))
    with pytest.raises(RequestValidationError, match="holds at most 4 variables"):
        run(pool, scratch, path, media_type)
