"""The swath transformer on tiny real swaths: NetCDF-4 files written by netCDF-C, as data providers write them."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pyproj
import pytest
import rasterio
from affine import Affine

from geomesh.errors import (
    RequestValidationError,
    TransformError,
    UnsupportedOperationError,
)
from geomesh.v1 import transformer_pb2, types_pb2
from transformers.grids import CRS_MESSAGE, INTERPOLATIONS, GridSpec, grid_spec
from transformers.sources import DataAccess, Source
from transformers.swath.process import (
    NETCDF,
    TIFF,
    RegridRequest,
    output_file_name,
    regrid_granule,
)
from transformers.swath.regrid import regrid, swath_grid
from transformers.swath.service import regrid_request
from transformers.swath.source import read_swath

ROWS, COLS = 40, 30
LCC = "+proj=lcc +lat_1=43 +lat_2=62 +lat_0=30 +lon_0=10 +x_0=0 +y_0=0 +ellps=intl +units=m +no_defs"


def _geolocation() -> tuple[np.ndarray, np.ndarray]:
    """A track climbing north-north-east; scan lines run east-south-east."""
    rows, cols = np.indices((ROWS, COLS), dtype=np.float64)
    return 10.0 + 0.25 * rows - 0.05 * cols, 20.0 + 0.05 * rows + 0.2 * cols


def _blocks() -> np.ndarray:
    """A distinct value per 4 x 4 block of pixels (1..80), so nearest neighbour is checkable."""
    rows, cols = np.indices((ROWS, COLS))
    return (1 + (rows // 4) * 8 + cols // 4).astype(np.uint8)


def _gradient() -> np.ndarray:
    """r + c with a nodata (255) patch in the middle."""
    rows, cols = np.indices((ROWS, COLS))
    values = (rows + cols).astype(np.uint8)
    values[15:25, 10:20] = 255
    return values


@pytest.fixture(scope="module")
def swath_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("swath") / "tiny.nc"
    lat, lon = _geolocation()
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("time", 1)
        nc.createDimension("along", ROWS)
        nc.createDimension("across", COLS)
        time = nc.createVariable("time", "f8", ("time",))
        time.units = "seconds since 2020-01-01 00:00:00"
        time[:] = [3600.0]
        for name, values, units in (("lat", lat, "degrees_north"), ("lon", lon, "degrees_east")):
            variable = nc.createVariable(name, "f4", ("along", "across"))
            variable.units = units
            variable[:] = values
        blocks = nc.createVariable("block_var", "u1", ("along", "across"), fill_value=0)
        blocks.set_auto_maskandscale(False)
        blocks.setncatts({"scale_factor": np.float32(0.5), "add_offset": np.float32(1.0), "units": "K",
                          "long_name": "blocks", "coordinates": "lat lon"})
        blocks[:] = _blocks()
        masked = nc.createVariable("masked_var", "u1", ("along", "across"), fill_value=255)
        masked.set_auto_maskandscale(False)
        masked.coordinates = "lat lon"
        masked[:] = _gradient()
        floats = nc.createVariable("float_var", "f4", ("along", "across"))
        floats.coordinates = "lat lon"
        floats[:] = np.indices((ROWS, COLS))[0] * 1.5
    return path


def _regrid(swath_file: Path, tmp_path: Path, spec: GridSpec = GridSpec(), media_type: str = NETCDF) -> Path:
    output = regrid_granule(RegridRequest("G1-TEST", "tiny.nc", Source("G1-TEST", swath_file.as_uri()), media_type, spec), DataAccess(), tmp_path)
    assert output.path.parent == tmp_path and output.media_type == media_type
    assert output.file_name == "tiny_regridded" + (".nc" if media_type == NETCDF else ".tif")
    assert output.size_bytes == output.path.stat().st_size
    return output.path


def _pixel(grid_x: np.ndarray, grid_y: np.ndarray, x: float, y: float) -> tuple[int, int]:
    """Row and column of the output pixel whose centre is nearest (x, y)."""
    return int(np.abs(grid_y - y).argmin()), int(np.abs(grid_x - x).argmin())


def test_reads_the_swath_and_its_attributes(swath_file: Path) -> None:
    swath = read_swath(swath_file, "G1-TEST")
    assert [v.name for v in swath.variables] == ["block_var", "masked_var", "float_var"]
    assert swath.lat.shape == (ROWS, COLS) and swath.time is not None
    blocks = swath.variables[0]
    assert blocks.fill_value == 0 and blocks.attrs["scale_factor"] == np.float32(0.5)
    assert "coordinates" not in blocks.attrs and "DIMENSION_LIST" not in blocks.attrs
    assert np.isnan(swath.variables[2].output_fill)


def test_default_grid_is_wgs84_at_the_finer_swath_spacing(swath_file: Path, tmp_path: Path) -> None:
    with netCDF4.Dataset(_regrid(swath_file, tmp_path)) as nc:
        assert set(nc.variables) == {"time", "y", "x", "latitude_longitude", "block_var", "masked_var", "float_var"}
        assert nc["block_var"].grid_mapping == "latitude_longitude"
        assert (nc["x"].standard_name, nc["x"].units) == ("longitude", "degrees_east")
        assert (nc["y"].standard_name, nc["y"].units) == ("latitude", "degrees_north")
        x, y = nc["x"][:], nc["y"][:]
        step = np.hypot(0.2, 0.05)  # across the track; along it pixels are 0.255 degrees apart
        assert x[1] - x[0] == pytest.approx(step, rel=0.03) and y[0] - y[1] == pytest.approx(step, rel=0.03)
        lat, lon = _geolocation()
        assert x[0] == pytest.approx(lon.min(), abs=step) and x[-1] == pytest.approx(lon.max(), abs=step)
        assert y[-1] == pytest.approx(lat.min(), abs=step) and y[0] == pytest.approx(lat.max(), abs=step)
        assert nc["time"][:].tolist() == [3600.0] and nc["time"].units == "seconds since 2020-01-01 00:00:00"


def test_nearest_puts_each_source_pixel_where_its_lat_lon_says(swath_file: Path, tmp_path: Path) -> None:
    # A finer grid than the swath, so each output pixel's nearest source pixel is the one under it.
    spec = grid_spec("EPSG:3857", "near", [], [5000, 5000], None, None)
    with netCDF4.Dataset(_regrid(swath_file, tmp_path, spec)) as nc:
        nc.set_auto_maskandscale(False)
        blocks, x, y = nc["block_var"][0], nc["x"][:], nc["y"][:]
        assert nc["block_var"].dimensions == ("time", "y", "x")
    lat, lon = _geolocation()
    xs, ys = pyproj.Transformer.from_crs(4326, 3857, always_xy=True).transform(lon, lat)
    source = _blocks()
    for row in range(1, ROWS - 2, 4):
        for col in range(1, COLS - 2, 4):
            for r, c in ((row, col), (row + 1, col + 1)):  # inside the block, away from its edges
                assert blocks[_pixel(x, y, xs[r, c], ys[r, c])] == source[r, c], (r, c)
    assert blocks[0, 0] == 0 and blocks[-1, -1] == 0  # corners of the grid lie outside the tilted swath


def test_each_variable_keeps_its_own_fill_value_and_attributes(swath_file: Path, tmp_path: Path) -> None:
    with netCDF4.Dataset(_regrid(swath_file, tmp_path)) as nc:
        nc.set_auto_maskandscale(False)
        x, y = nc["x"][:], nc["y"][:]
        lat, lon = _geolocation()
        inside_patch = _pixel(x, y, lon[21, 13], lat[21, 13])  # inside a block too, away from its edges
        assert nc["masked_var"][0][inside_patch] == 255  # the patch is nodata in masked_var only
        assert nc["block_var"][0][inside_patch] == _blocks()[21, 13]
        assert not np.isnan(nc["float_var"][0][inside_patch])
        assert np.isnan(nc["float_var"][0][0, 0])  # no fill value of its own: NaN outside the swath
        blocks = nc["block_var"]
        assert blocks.ncattrs()[0] == "_FillValue" and blocks.getncattr("_FillValue") == 0
        assert (blocks.scale_factor, blocks.add_offset, blocks.units, blocks.long_name) == (0.5, 1.0, "K", "blocks")
        assert "coordinates" not in blocks.ncattrs()
        assert nc["masked_var"].getncattr("_FillValue") == 255
        # Unpacked as CF says.
        nc.set_auto_maskandscale(True)
        assert nc["block_var"][0][inside_patch] == pytest.approx(_blocks()[21, 13] * 0.5 + 1.0)


def test_bilinear_differs_from_near(swath_file: Path, tmp_path: Path) -> None:
    planes = {}
    for interpolation in ("near", "bilinear"):
        spec = grid_spec(None, interpolation, [21.0, 12.0, 25.0, 18.0], [], 80, 120)
        with netCDF4.Dataset(_regrid(swath_file, tmp_path, spec)) as nc:
            nc.set_auto_maskandscale(False)
            planes[interpolation] = nc["masked_var"][0]
    valid = (planes["near"] != 255) & (planes["bilinear"] != 255)
    assert valid.sum() > 500
    assert (planes["near"][valid] != planes["bilinear"][valid]).mean() > 0.2


def test_projected_output_names_its_grid_mapping_after_the_projection(swath_file: Path, tmp_path: Path) -> None:
    path = _regrid(swath_file, tmp_path, grid_spec(LCC, None, [], [], 200, None))
    with netCDF4.Dataset(path) as nc:
        assert nc["block_var"].grid_mapping == "lambert_conformal_conic"
        mapping = nc["lambert_conformal_conic"]
        assert mapping.grid_mapping_name == "lambert_conformal_conic"
        assert list(mapping.standard_parallel) == [43.0, 62.0]
        assert pyproj.CRS.from_wkt(mapping.crs_wkt).equals(pyproj.CRS.from_proj4(LCC))
        assert (nc["x"].standard_name, nc["x"].units) == ("projection_x_coordinate", "m")
        assert nc["x"].shape == (200,)
        x, y = nc["x"][:], nc["y"][:]
    # GDAL reads the same grid from the file (GeoTransform and the grid mapping).
    with rasterio.open(f"netcdf:{path}:block_var") as dataset:
        assert (dataset.width, dataset.height) == (len(x), len(y))
        assert dataset.transform.c == pytest.approx(x[0] - (x[1] - x[0]) / 2)
        assert pyproj.CRS.from_wkt(dataset.crs.to_wkt()).equals(pyproj.CRS.from_proj4(LCC))


def test_grid_parameters(swath_file: Path) -> None:
    swath = read_swath(swath_file, "G1-TEST")
    extent = [2_000_000.0, 1_000_000.0, 3_000_000.0, 2_500_000.0]
    grid = swath_grid(swath, grid_spec("EPSG:3857", None, extent, [], 100, 50))
    assert (grid.width, grid.height) == (100, 50)
    assert grid.transform == Affine(10_000.0, 0.0, 2_000_000.0, 0.0, -30_000.0, 2_500_000.0)
    grid = swath_grid(swath, grid_spec("EPSG:3857", None, extent, [20_000, 10_000], None, None))
    assert (grid.width, grid.height) == (50, 150)
    grid = swath_grid(swath, grid_spec("EPSG:3857", None, extent, [], 100, None))
    assert (grid.width, grid.height) == (100, 150)  # square pixels
    grid = swath_grid(swath, grid_spec("EPSG:3857", None, extent, [], None, 30))
    assert (grid.width, grid.height) == (20, 30)
    with pytest.raises(RequestValidationError, match="above the limit of 32768 pixels a side"):
        swath_grid(swath, grid_spec("EPSG:3857", None, extent, [1, 1], None, None))
    # 3 variables x 5000 x 5000 pixels would hold 300 MB of floats in memory.
    with pytest.raises(RequestValidationError, match="for each of 3 variables, above the limit of 67108864"):
        swath_grid(swath, grid_spec("EPSG:3857", None, extent, [], 5000, 5000))
    assert swath_grid(swath, grid_spec("EPSG:3857", None, extent, [], 4000, 4000)).width == 4000


def test_geotiff_output(swath_file: Path, tmp_path: Path) -> None:
    extent = [2_000_000.0, 1_000_000.0, 3_000_000.0, 2_500_000.0]
    path = _regrid(swath_file, tmp_path, grid_spec("EPSG:3857", "bilinear", extent, [], 100, 150), TIFF)
    with rasterio.open(path) as dataset:
        assert dataset.driver == "GTiff" and dataset.crs.to_epsg() == 3857
        assert dataset.transform == Affine(10_000.0, 0.0, 2_000_000.0, 0.0, -10_000.0, 2_500_000.0)
        assert dataset.descriptions == ("block_var", "masked_var", "float_var")
        assert dataset.dtypes == ("float32",) * 3  # one dtype for all bands: the widest
        assert dataset.scales == (0.5, 1.0, 1.0) and dataset.offsets == (1.0, 0.0, 0.0)
        assert dataset.tags(1)["_FillValue"] == "0" and dataset.tags(2)["_FillValue"] == "255"
        assert dataset.nodata is None  # the fill values differ: the swath's footprint is the mask
        mask = dataset.dataset_mask()
        assert mask[0, 0] == 0 and mask.any()
        assert dataset.read(1)[mask > 0].min() >= 1


def _item(swath_file: Path, **output: object) -> transformer_pb2.WorkItem:
    item = transformer_pb2.WorkItem(
        granule=types_pb2.Granule(id="G1-TEST", name="tiny.nc", links=[types_pb2.DataLink(href=swath_file.as_uri())])
    )
    item.output.format = str(output.pop("format", NETCDF))
    for key, value in output.items():
        setattr(item.output, key, value)
    return item


def test_work_items_become_requests(swath_file: Path) -> None:
    request = regrid_request(_item(swath_file, crs="EPSG:6933", interpolation="bilinear", width=10), Source("G1-TEST", swath_file.as_uri()))
    assert request.media_type == NETCDF and request.source.href == swath_file.as_uri()
    assert request.grid == GridSpec(crs="EPSG:6933", interpolation="bilinear", width=10)
    assert regrid_request(_item(swath_file, format="image/tiff; profile=cog"), Source("G1-TEST", swath_file.as_uri())).media_type == TIFF
    assert output_file_name("000_00_000_africa", NETCDF) == "000_00_000_africa_regridded.nc"


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (lambda item: item.variables.append("block_var"), UnsupportedOperationError, "variable subsets"),
        (lambda item: item.bbox.CopyFrom(types_pb2.BBox(west=0, south=0, east=1, north=1)),
         UnsupportedOperationError, "bounding-box subsets"),
        (lambda item: setattr(item.output, "format", "image/png"), UnsupportedOperationError,
         "it writes these formats: application/x-netcdf4, image/tiff"),
        (lambda item: setattr(item.output, "crs", "EPSG:nope"), RequestValidationError, CRS_MESSAGE),
        (lambda item: setattr(item.output, "interpolation", "smooth"), RequestValidationError, "interpolation"),
    ],
)
def test_refused_work_items(swath_file: Path, change: object, error: type[Exception], message: str) -> None:
    item = _item(swath_file)
    change(item)  # type: ignore[operator]
    with pytest.raises(error) as raised:
        regrid_request(item, Source("G1-TEST", swath_file.as_uri()))
    assert message in str(raised.value)


def test_unreadable_granules(tmp_path: Path) -> None:
    not_netcdf = tmp_path / "plain.nc"
    not_netcdf.write_bytes(b"not a NetCDF file")
    gridded = tmp_path / "gridded.nc"
    with netCDF4.Dataset(gridded, "w") as nc:
        nc.createDimension("lat", 3)
        nc.createVariable("lat", "f4", ("lat",))[:] = [1, 2, 3]
        nc.createVariable("lon", "f4", ("lat",))[:] = [1, 2, 3]
    for href, message in (
        (not_netcdf.as_uri(), "as NetCDF-4"),
        (gridded.as_uri(), "is not a swath"),
    ):
        with pytest.raises(TransformError, match=message):
            regrid_granule(RegridRequest("G1-TEST", "a", Source("G1-TEST", href), NETCDF), DataAccess(), tmp_path)
    assert list(tmp_path.iterdir()) == [not_netcdf, gridded] or set(tmp_path.iterdir()) == {not_netcdf, gridded}


@pytest.mark.parametrize("interpolation", sorted(INTERPOLATIONS))
def test_every_interpolation_gdal_names_works_on_swaths(swath_file: Path, interpolation: str) -> None:
    swath = read_swath(swath_file, "G1-TEST")
    spec = grid_spec(None, interpolation, [], [], 60, None)
    values = regrid(swath, swath_grid(swath, spec), spec.resampling)
    blocks = values["block_var"]
    assert blocks.shape[1] == 60 and blocks.dtype == np.uint8
    assert 0.3 < (blocks != 0).mean() < 0.95  # the swath, and fill around its tilted edges
    assert blocks[blocks != 0].max() <= 90  # 1..80, give or take cubic and lanczos overshoot


def test_output_bbox_is_where_the_swath_falls_on_the_grid(swath_file: Path, tmp_path: Path) -> None:
    lat, lon = _geolocation()
    whole = regrid_granule(RegridRequest("G1-TEST", "tiny.nc", Source("G1-TEST", swath_file.as_uri()), NETCDF), DataAccess(), tmp_path)
    assert (whole.bbox.west, whole.bbox.south, whole.bbox.east, whole.bbox.north) == pytest.approx(
        (lon.min(), lat.min(), lon.max(), lat.max())
    )
    part = regrid_granule(
        RegridRequest("G1-TEST", "tiny.nc", Source("G1-TEST", swath_file.as_uri()), NETCDF, grid_spec(None, None, [20, 10, 23, 13], [], 30, 30)),
        DataAccess(),
        tmp_path,
    )
    assert 20 <= part.bbox.west < part.bbox.east <= 23 and 10 <= part.bbox.south < part.bbox.north <= 13
    assert part.bbox.east > 22.5 and part.bbox.north > 12.5  # the swath covers that corner


def test_an_unreadable_granule_names_the_granule_not_the_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """HDF5's message names the file (for a remote granule, geomesh's private copy of it): logged, not sent."""
    not_netcdf = tmp_path / "plain.nc"
    not_netcdf.write_bytes(b"not a NetCDF file")
    with pytest.raises(TransformError) as raised:
        regrid_granule(RegridRequest("G1-TEST", "a", Source("G1-TEST", not_netcdf.as_uri()), NETCDF), DataAccess(), tmp_path)
    assert raised.value.message == "Cannot process granule G1-TEST: it could not be read as NetCDF-4 (HDF5)."
    assert "plain.nc" in caplog.text
