"""Shape subsetting in the gdal transformer (transformers/gdal/masking.py), on small real GeoTIFFs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin
from shapely.geometry import Polygon, box

from geomesh.errors import RequestValidationError
from geomesh.model import BBox
from transformers.gdal.datasets import DatasetPool
from transformers.gdal.subset import SubsetRequest, subset
from transformers.grids import GridSpec
from transformers.sources import Source

RGBA = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
# Bounds 10..40 E, -10..20 N; its hypotenuse runs from (40, -10) to (10, 20).
TRIANGLE = Polygon([(10, -10), (40, -10), (10, 20)])


def _write(path: Path, data: np.ndarray, **profile: object) -> Path:
    count, height, width = data.shape
    options = {"crs": "EPSG:4326", "transform": from_origin(-180, 90, 1, 1)} | profile
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count, dtype=data.dtype, **options) as dst:
        dst.write(data)
        dst.descriptions = tuple(f"b{i}" for i in range(1, count + 1))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("shape-granules")
    ones = np.full((4, 180, 360), 200, dtype=np.uint8)
    rgba = _write(folder / "rgba.tif", ones)
    with rasterio.open(rgba, "r+") as dst:
        dst.colorinterp = RGBA
        dst.write(np.full((180, 360), 255, dtype=np.uint8), 4)
    return {
        "rgba": rgba,
        "nodata": _write(folder / "nodata.tif", np.full((2, 180, 360), 7, dtype=np.int16), nodata=-1),
        "float": _write(folder / "float.tif", np.full((1, 180, 360), 1.5, dtype=np.float32)),
        "plain": _write(folder / "plain.tif", np.full((1, 180, 360), 9, dtype=np.uint8)),
        "utm": _write(
            folder / "utm.tif", np.full((1, 100, 100), 5, dtype=np.uint16),
            crs="EPSG:32633", transform=from_origin(400_000, 5_000_000, 1000, 1000),
        ),
    }


def _subset(path: Path, tmp_path: Path, shape: object, **changes: object):
    options: dict = {"media_type": "image/tiff"} | changes
    request = SubsetRequest(granule_id="G1", granule_name="granule.tif", source=Source("G1", str(path)), shape=shape, **options)
    pool = DatasetPool(4)
    try:
        return subset(request, pool, tmp_path)
    finally:
        pool.close()


def _inside(dataset: rasterio.io.DatasetReader, lon: float, lat: float) -> tuple[int, int]:
    return dataset.index(lon, lat)


def test_rgba_alpha_is_zero_outside_and_the_crop_is_the_shape_bounds(files: dict[str, Path], tmp_path: Path) -> None:
    output = _subset(files["rgba"], tmp_path, TRIANGLE)
    assert output.file_name == "granule_subsetted.tif"
    assert (output.bbox.west, output.bbox.south, output.bbox.east, output.bbox.north) == (10, -10, 40, 20)
    with rasterio.open(output.path) as dataset:
        assert dataset.bounds == (10, -10, 40, 20) and dataset.count == 4
        data = dataset.read()
        inside, outside = _inside(dataset, 15, -5), _inside(dataset, 35, 15)
        assert list(data[:, inside[0], inside[1]]) == [200, 200, 200, 255]
        assert list(data[:, outside[0], outside[1]]) == [0, 0, 0, 0]
        # The hypotenuse: pixel centres on the left of it are kept.
        kept = (data[3] == 255).sum()
        assert kept == pytest.approx(30 * 30 / 2, rel=0.05)


def test_nodata_fills_the_outside(files: dict[str, Path], tmp_path: Path) -> None:
    output = _subset(files["nodata"], tmp_path, TRIANGLE, variables=("b2",))
    with rasterio.open(output.path) as dataset:
        assert dataset.nodata == -1 and dataset.descriptions == ("b2",)
        data = dataset.read(1)
        assert data[_inside(dataset, 15, -5)] == 7 and data[_inside(dataset, 35, 15)] == -1


def test_float_without_nodata_gets_nan(files: dict[str, Path], tmp_path: Path) -> None:
    output = _subset(files["float"], tmp_path, TRIANGLE)
    with rasterio.open(output.path) as dataset:
        assert np.isnan(dataset.nodata)
        data = dataset.read(1)
        assert data[_inside(dataset, 15, -5)] == 1.5 and np.isnan(data[_inside(dataset, 35, 15)])


def test_integers_without_nodata_get_a_mask_band(files: dict[str, Path], tmp_path: Path) -> None:
    output = _subset(files["plain"], tmp_path, TRIANGLE)
    with rasterio.open(output.path) as dataset:
        assert dataset.nodata is None
        mask, data = dataset.dataset_mask(), dataset.read(1)
        assert mask[_inside(dataset, 15, -5)] == 255 and data[_inside(dataset, 15, -5)] == 9
        assert mask[_inside(dataset, 35, 15)] == 0 and data[_inside(dataset, 35, 15)] == 0


def test_shape_and_bbox_crop_to_their_intersection(files: dict[str, Path], tmp_path: Path) -> None:
    output = _subset(files["rgba"], tmp_path, TRIANGLE, bbox=BBox(0, 0, 20, 10))
    with rasterio.open(output.path) as dataset:
        assert dataset.bounds == (10, 0, 20, 10)
        assert (dataset.read(4) == 255).all()  # that corner lies wholly in the triangle


def test_projected_source_masks_in_its_own_crs(files: dict[str, Path], tmp_path: Path) -> None:
    """The UTM granule spans about 13.7-15.1 E, 44.3-45.1 N: keep the triangle left of its diagonal."""
    with rasterio.open(files["utm"]) as src:
        from rasterio.warp import transform_bounds

        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    output = _subset(files["utm"], tmp_path, Polygon([(west - 1, south - 1), (east + 1, south - 1), (west - 1, north + 1)]))
    with rasterio.open(output.path) as dataset:
        assert dataset.crs.to_epsg() == 32633
        mask = dataset.dataset_mask()
        assert 0.3 < (mask > 0).mean() < 0.7
        assert mask[-1, 0] == 255 and mask[0, -1] == 0


def test_mask_before_reprojection(files: dict[str, Path], tmp_path: Path) -> None:
    output = _subset(files["rgba"], tmp_path, TRIANGLE, grid=GridSpec(crs="EPSG:3857"))
    assert output.file_name == "granule_regridded_subsetted.tif"
    with rasterio.open(output.path) as dataset:
        assert dataset.crs.to_epsg() == 3857
        alpha = dataset.read(4)
        assert alpha.max() == 255 and alpha.min() == 0


def test_a_shape_smaller_than_a_pixel_keeps_the_pixel_it_touches(files: dict[str, Path], tmp_path: Path) -> None:
    output = _subset(files["rgba"], tmp_path, box(12.2, 5.2, 12.4, 5.4))
    with rasterio.open(output.path) as dataset:
        assert (dataset.width, dataset.height) == (1, 1) and dataset.read(4)[0, 0] == 255


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        # Its bounds overlap the UTM granule but the polygon itself passes beside it.
        (Polygon([(10, 40), (20, 40), (10, 50)]).difference(box(13, 43, 16, 46)), "does not intersect granule G1"),
        (box(100, 60, 110, 70), "The requested shape does not intersect granule G1, whose extent is"),
    ],
)
def test_shapes_missing_the_granule(files: dict[str, Path], tmp_path: Path, shape: object, message: str) -> None:
    with pytest.raises(RequestValidationError, match=message):
        _subset(files["utm"], tmp_path, shape)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("shape", [TRIANGLE, box(12.2, 5.2, 12.4, 5.4)])
def test_large_windows_mask_slab_by_slab_alike(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shape: Polygon
) -> None:
    """Above _WHOLE_MASK_PIXELS the mask is made per slab: same output."""
    from transformers.gdal import masking

    with rasterio.open(_subset(files["rgba"], tmp_path, shape).path) as whole:
        expected = whole.read()
    monkeypatch.setattr(masking, "_WHOLE_MASK_PIXELS", 0)
    monkeypatch.setattr(masking, "_SLAB_BYTES", 4 * 360 * 7)  # slabs of 7 rows
    with rasterio.open(_subset(files["rgba"], tmp_path, shape).path) as slabs:
        assert (slabs.read() == expected).all()


@pytest.mark.parametrize(("media_type", "crs"), [("image/tiff", "EPSG:3857"), ("image/png", None)])
def test_the_mask_band_survives_a_warp_and_becomes_a_pngs_alpha(
    files: dict[str, Path], tmp_path: Path, media_type: str, crs: str | None
) -> None:
    output = _subset(files["plain"], tmp_path, TRIANGLE, media_type=media_type, grid=GridSpec(crs=crs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        dataset = rasterio.open(output.path)
    with dataset:
        mask = dataset.read(2) if media_type == "image/png" else dataset.dataset_mask()
        assert 0.4 < (mask == 255).mean() < 0.6 and set(np.unique(mask)) == {0, 255}
        assert (dataset.read(1)[mask == 255] == 9).all()
