"""The netcdf transformer on small real NetCDF4 files: subsets, regridding, and each output opened by its reader."""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime
from pathlib import Path

import grpc
import netCDF4
import numpy as np
import pyproj
import pytest
import rasterio
import xarray as xr
import zarr
from rasterio.io import MemoryFile
from rasterio.transform import from_origin

from geomesh.errors import (
    RequestValidationError,
    TransformError,
    UnsupportedOperationError,
)
from geomesh.model import BBox, TimeRange
from geomesh.rpc import open_channel
from geomesh.settings import TransformerSettings
from geomesh.v1 import request_pb2, transformer_pb2, transformer_pb2_grpc, types_pb2
from transformers.grids import GridSpec, grid_spec, output_grid, target_crs
from transformers.netcdf.process import NetcdfRequest, process
from transformers.netcdf.service import netcdf_request, serve
from transformers.netcdf.subset import DimensionRange
from transformers.netcdf.writers import NETCDF4, TIFF, ZARR
from transformers.sources import DataAccess, Source

# A 1-degree grid over 20W-20E, 10S-10N; 3 days; 4 levels.
LATS = np.arange(-9.5, 10.0, 1.0)
LONS = np.arange(-19.5, 20.0, 1.0)
LEVELS = np.array([1000.0, 850.0, 500.0, 250.0])
TIMES = [datetime(2020, 1, day) for day in (1, 2, 3)]
SCALE, OFFSET, FILL = 0.01, 273.15, -32768


def write_grid(path: Path, *, lat_ascending: bool = True) -> Path:
    """temp: packed int16 (time, lev, lat, lon); mask: uint8 (time, lat, lon); a CF grid mapping and time bounds."""
    lats = LATS if lat_ascending else LATS[::-1]
    packed = (np.arange(3 * 4 * 20 * 40).reshape(3, 4, 20, 40) % 3000).astype(np.int16)
    if not lat_ascending:
        packed = packed[:, :, ::-1, :]
    packed[0, 0, 0 if lat_ascending else -1, 0] = FILL  # the south-west corner cell is missing
    mask = (np.arange(3 * 20 * 40).reshape(3, 20, 40) % 7).astype(np.uint8)
    if not lat_ascending:
        mask = mask[:, ::-1, :]
    with netCDF4.Dataset(path, "w") as nc:
        nc.setncatts({"title": "a test grid", "history": "2019-12-31T00:00:00Z made by hand", "Conventions": "CF-1.8"})
        for name, size in (("time", 3), ("lev", 4), ("lat", lats.size), ("lon", LONS.size), ("nv", 2)):
            nc.createDimension(name, size)
        time = nc.createVariable("time", "f8", ("time",))
        time.setncatts({"units": "days since 2020-01-01", "calendar": "standard", "standard_name": "time", "bounds": "time_bnds"})
        time[:] = [0.5, 1.5, 2.5]
        nc.createVariable("time_bnds", "f8", ("time", "nv"))[:] = [[0, 1], [1, 2], [2, 3]]
        lev = nc.createVariable("lev", "f8", ("lev",))
        lev.setncatts({"units": "hPa", "positive": "down", "long_name": "pressure level"})
        lev[:] = LEVELS
        for name, values, standard, units in (("lat", lats, "latitude", "degrees_north"), ("lon", LONS, "longitude", "degrees_east")):
            variable = nc.createVariable(name, "f8", (name,))
            variable.setncatts({"standard_name": standard, "units": units})
            variable[:] = values
        nc.createVariable("crs", "i4").setncatts(pyproj.CRS.from_epsg(4326).to_cf())
        temp = nc.createVariable("temp", "i2", ("time", "lev", "lat", "lon"), fill_value=FILL, zlib=True, chunksizes=(1, 1, 10, 20))
        temp.set_auto_maskandscale(False)
        temp.setncatts({"scale_factor": SCALE, "add_offset": OFFSET, "units": "K", "long_name": "air temperature",
                        "standard_name": "air_temperature", "grid_mapping": "crs"})
        temp[:] = packed
        flag = nc.createVariable("mask", "u1", ("time", "lat", "lon"), fill_value=255)
        flag.setncatts({"long_name": "land mask", "grid_mapping": "crs"})
        flag[:] = mask
    return path


def write_swath(path: Path) -> Path:
    """A swath-like granule: 2-D latitude/longitude (along, across) as the coordinates of its variable."""
    along, across = np.meshgrid(np.arange(30), np.arange(12), indexing="ij")
    lat = (-20.0 + along * 0.5 + across * 0.05).astype(np.float32)
    lon = (100.0 + across * 0.4 - along * 0.1).astype(np.float32)
    ds = xr.Dataset(
        {"brightness": (("along", "across"), (along * 12 + across).astype(np.float32), {"units": "K", "_FillValue": np.float32(-9999)})},
        coords={
            "lat": (("along", "across"), lat, {"standard_name": "latitude", "units": "degrees_north"}),
            "lon": (("along", "across"), lon, {"standard_name": "longitude", "units": "degrees_east"}),
        },
        attrs={"title": "a test swath"},
    )
    ds.to_netcdf(path, engine="netcdf4")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("netcdf")
    return {
        "up": write_grid(folder / "grid_up.nc"),
        "down": write_grid(folder / "grid_down.nc", lat_ascending=False),
        "swath": write_swath(folder / "swath.nc"),
    }


def run(path: Path, tmp_path: Path, media_type: str = NETCDF4, **fields: object):
    request = NetcdfRequest(
        granule_id="G1-TEST", granule_name=path.name, source=Source("G1-TEST", path.as_uri()), media_type=media_type, **fields
    )
    return process(request, DataAccess(), tmp_path)


def opened(output) -> xr.Dataset:
    return xr.open_dataset(output.path, engine="netcdf4", mask_and_scale=False, decode_coords="all")


def test_variable_subset_keeps_the_coordinates_and_grid_mapping(files: dict[str, Path], tmp_path: Path) -> None:
    output = run(files["up"], tmp_path, variables=("mask",))
    assert output.file_name == "grid_up_mask.nc4" and output.media_type == NETCDF4
    with opened(output) as ds:
        assert list(ds.data_vars) == ["mask"]
        assert {"lat", "lon", "time", "crs", "time_bnds"} <= set(ds.variables)
        assert ds["mask"].encoding["grid_mapping"] == "crs"
    assert output.bbox == BBox(-20, -10, 20, 10)


def test_an_unknown_variable_names_the_files_variables(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(RequestValidationError, match=r"no variable named purple \(its variables: temp, mask\)"):
        run(files["up"], tmp_path, variables=("mask", "purple"))


@pytest.mark.parametrize("which", ["up", "down"])
def test_bbox_subset_crops_whichever_way_latitude_runs(files: dict[str, Path], tmp_path: Path, which: str) -> None:
    output = run(files[which], tmp_path, variables=("mask",), bbox=BBox(-5, 0, 3.2, 4))
    assert output.file_name == f"grid_{which}_mask_subsetted.nc4"
    assert output.bbox == BBox(-5, 0, 3, 4)  # whole cells whose centres are inside
    with opened(output) as ds, opened(run(files["up"], tmp_path)) as whole:
        assert ds.sizes["lat"] == 4 and ds.sizes["lon"] == 8
        assert sorted(ds["lat"].values) == [0.5, 1.5, 2.5, 3.5]
        expected = whole["mask"].sel(lat=ds["lat"], lon=ds["lon"])
        np.testing.assert_array_equal(ds["mask"].values, expected.values)


def write_0_360(path: Path) -> Path:
    """A global 10-degree grid with longitudes 5..355, as many model outputs have."""
    lons = np.arange(5.0, 360.0, 10.0)
    lats = np.arange(-85.0, 90.0, 10.0)
    xr.Dataset(
        {"v": (("lat", "lon"), np.tile(lons, (lats.size, 1)).astype(np.float32))},
        coords={"lat": ("lat", lats, {"units": "degrees_north"}), "lon": ("lon", lons, {"units": "degrees_east"})},
    ).to_netcdf(path, engine="netcdf4")
    return path


@pytest.mark.parametrize(
    ("bbox", "lons", "extent"),
    [
        (BBox(-20, -10, -10, 10), [345.0], BBox(-20, -10, -10, 10)),
        (BBox(10, -10, 30, 10), [15.0, 25.0], BBox(10, -10, 30, 10)),
        (BBox(-180, -10, 180, 10), list(np.arange(5.0, 360.0, 10.0)), BBox(-180, -10, 180, 10)),
    ],
)
def test_bbox_on_a_0_to_360_grid(tmp_path: Path, bbox: BBox, lons: list[float], extent: BBox) -> None:
    output = run(write_0_360(tmp_path / "model.nc"), tmp_path, bbox=bbox)
    with opened(output) as ds:
        assert list(ds["lon"].values) == lons and ds.sizes["lat"] == 2
    assert output.bbox == extent


def test_bboxes_crossing_a_seam_are_refused(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UnsupportedOperationError, match="crosses 0"):
        run(write_0_360(tmp_path / "model.nc"), tmp_path, bbox=BBox(-10, -10, 10, 10))
    with pytest.raises(UnsupportedOperationError, match="antimeridian"):
        run(files["up"], tmp_path, bbox=BBox(170, -10, -170, 10))


def test_a_bbox_outside_the_grid_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(RequestValidationError, match="does not intersect granule G1-TEST, whose extent is -20,-10,20,10"):
        run(files["up"], tmp_path, bbox=BBox(50, 50, 60, 60))


@pytest.mark.parametrize(
    ("start", "end", "days"),
    [
        (datetime(2020, 1, 2, 6, tzinfo=UTC), datetime(2020, 1, 2, 7, tzinfo=UTC), [2]),
        (datetime(2020, 1, 2, 6, tzinfo=UTC), None, [2, 3]),
        (None, datetime(2020, 1, 1, 12, tzinfo=UTC), [1]),
        (datetime(2020, 1, 1, 23, tzinfo=UTC), datetime(2020, 1, 3, 1, tzinfo=UTC), [1, 2, 3]),
    ],
)
def test_time_subset_by_the_steps_bounds_with_open_ends(
    files: dict[str, Path], tmp_path: Path, start: datetime | None, end: datetime | None, days: list[int]
) -> None:
    output = run(files["up"], tmp_path, variables=("mask",), temporal=TimeRange(start, end))
    # A range that keeps every step cuts nothing: it only chose the granule.
    assert output.file_name == ("grid_up_mask_subsetted.nc4" if len(days) < 3 else "grid_up_mask.nc4")
    with opened(output) as ds:
        assert [t.astype("datetime64[D]").item().day for t in ds["time"].values] == days
        assert ds["time_bnds"].shape == (len(days), 2)
        assert ds["time"].encoding["units"] == "days since 2020-01-01"


def test_a_time_range_outside_the_file_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(RequestValidationError, match="No time step of granule G1-TEST falls in the requested time range"):
        run(files["up"], tmp_path, temporal=TimeRange(datetime(2021, 1, 1, tzinfo=UTC), None))


def test_dimension_subset_with_open_ends_combined_with_bbox_and_variables(files: dict[str, Path], tmp_path: Path) -> None:
    output = run(
        files["down"], tmp_path, variables=("temp",), bbox=BBox(0, 0, 2, 2),
        dimensions=(DimensionRange("lev", None, 850.0),),
    )
    with opened(output) as ds:
        assert list(ds["lev"].values) == [850.0, 500.0, 250.0]
        assert (ds.sizes["lat"], ds.sizes["lon"], ds.sizes["time"]) == (2, 2, 3)
    output = run(files["up"], tmp_path, dimensions=(DimensionRange("lev", 500.0, 900.0),))
    with opened(output) as ds:
        assert list(ds["lev"].values) == [850.0, 500.0]


def test_an_unknown_dimension_names_the_files_dimensions(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(RequestValidationError, match=r'no dimension named "band" \(its dimensions: time, lev, lat, lon, nv\)'):
        run(files["up"], tmp_path, dimensions=(DimensionRange("band", 1.0, 2.0),))
    with pytest.raises(RequestValidationError, match="selects nothing"):
        run(files["up"], tmp_path, dimensions=(DimensionRange("lev", 1.0, 2.0),))


def test_netcdf_output_is_cf_with_packing_fill_attributes_history_and_compression(files: dict[str, Path], tmp_path: Path) -> None:
    output = run(files["up"], tmp_path, variables=("temp",), bbox=BBox(-20, -10, 0, 0))
    with netCDF4.Dataset(output.path) as nc:
        assert nc.title == "a test grid" and nc.Conventions == "CF-1.8"
        lines = nc.history.splitlines()
        assert "geomesh netcdf transformer: variables temp; bbox -20,-10,0,0" in lines[0]
        assert lines[1] == "2019-12-31T00:00:00Z made by hand"
        temp = nc["temp"]
        temp.set_auto_maskandscale(False)
        assert temp.dtype == np.int16 and temp._FillValue == FILL
        assert (temp.scale_factor, temp.add_offset, temp.units) == (SCALE, OFFSET, "K")
        assert temp.grid_mapping == "crs" and temp.filters()["zlib"]
        assert temp.chunking() == [1, 1, 10, 20]
        assert temp[0, 0, 0, 0] == FILL
        assert pyproj.CRS.from_cf(nc["crs"].__dict__).equals(pyproj.CRS.from_epsg(4326))
        assert nc["crs"].grid_mapping_name == "latitude_longitude"
        for name, units in (("lat", "degrees_north"), ("lon", "degrees_east")):
            assert (nc[name].units, nc[name].standard_name) == (units, name[:3].replace("lat", "latitude").replace("lon", "longitude"))
            assert "_FillValue" not in nc[name].ncattrs()
    with xr.open_dataset(output.path) as decoded:  # CF decoding applies the packing
        assert float(decoded["temp"][0, 0, 1, 0]) == pytest.approx(40 * 1 * SCALE + OFFSET)
        assert np.isnan(decoded["temp"][0, 0, 0, 0])


def _gdal_grid(spec: GridSpec):
    """The gdal family's grid for the same source grid (a GeoTIFF in memory)."""
    with MemoryFile() as memory, memory.open(
        driver="GTiff", width=40, height=20, count=1, dtype="uint8", crs="EPSG:4326", transform=from_origin(-20, 10, 1, 1)
    ) as dataset:
        return output_grid(dataset.crs, tuple(dataset.bounds), (40, 20), target_crs(spec.crs or "EPSG:4326"), spec)


@pytest.mark.parametrize(
    "spec",
    [
        grid_spec("EPSG:6933", None, [], [], None, None),
        grid_spec("EPSG:6933", "bilinear", [], [], 30, None),
        grid_spec(None, None, [], [], 10, 5),
    ],
)
def test_regridding_to_epsg_6933_matches_the_gdal_familys_grid(files: dict[str, Path], tmp_path: Path, spec: GridSpec) -> None:
    output = run(files["down"], tmp_path, variables=("mask",), grid=spec)
    grid = _gdal_grid(spec)
    assert output.file_name == "grid_down_mask_regridded.nc4"
    with opened(output) as ds, netCDF4.Dataset(output.path) as nc:
        x, y = ("x", "y") if spec.crs else ("lon", "lat")
        assert (ds.sizes[x], ds.sizes[y]) == (grid.width, grid.height)
        assert float(ds[x][0]) == pytest.approx(grid.transform.c + grid.transform.a / 2)
        assert float(ds[y][0]) == pytest.approx(grid.transform.f + grid.transform.e / 2)
        crs = pyproj.CRS.from_cf(nc["crs"].__dict__)
        assert crs.equals(pyproj.CRS.from_epsg(6933 if spec.crs else 4326))
        assert nc["mask"].grid_mapping == "crs"
        assert nc.Conventions == "CF-1.8"
        if spec.crs:
            assert (nc["x"].standard_name, nc["x"].units) == ("projection_x_coordinate", "metre")
            assert (nc["y"].standard_name, nc["y"].units) == ("projection_y_coordinate", "metre")
        else:
            assert (nc["lat"].standard_name, nc["lat"].units) == ("latitude", "degrees_north")
        assert ds["mask"].values.max() > 0
    assert output.bbox.west == pytest.approx(-20) and output.bbox.north == pytest.approx(10)
    with rasterio.open(f'NETCDF:"{output.path}":mask') as gdal:  # GDAL finds the grid too
        assert gdal.crs.to_epsg() == (6933 if spec.crs else 4326)
        assert (gdal.width, gdal.height) == (grid.width, grid.height)
        assert gdal.transform.almost_equals(grid.transform)


def test_reprojection_with_a_bbox_covers_only_the_crop(files: dict[str, Path], tmp_path: Path) -> None:
    output = run(files["up"], tmp_path, variables=("mask",), bbox=BBox(0, 0, 10, 10), grid=grid_spec("EPSG:6933", None, [], [], None, None))
    assert output.file_name == "grid_up_mask_regridded_subsetted.nc4"
    # The crop's extent (0-10 degrees) in whole output pixels of about a degree, not the whole grid's.
    bbox = output.bbox
    assert (bbox.west, bbox.south, bbox.east, bbox.north) == pytest.approx((0, 0, 10, 10), abs=1)


def test_a_one_cell_crop_regrids_with_the_sources_cell_size(files: dict[str, Path], tmp_path: Path) -> None:
    output = run(files["up"], tmp_path, variables=("mask",), bbox=BBox(0.4, 0.4, 0.6, 0.6), grid=grid_spec("EPSG:4326", None, [], [], 4, 4))
    with opened(output) as ds:
        assert (ds.sizes["lat"], ds.sizes["lon"]) == (4, 4)
        assert list(ds["lon"].values) == pytest.approx([0.125, 0.375, 0.625, 0.875])
    assert output.bbox == BBox(0, 0, 1, 1)


def test_zarr_output_is_one_zip_that_zarr_and_xarray_open(files: dict[str, Path], tmp_path: Path) -> None:
    output = run(files["up"], tmp_path, ZARR, bbox=BBox(-5, -5, 5, 5))
    assert output.file_name == "grid_up_subsetted.zarr.zip" and output.media_type == ZARR
    with zipfile.ZipFile(output.path) as archive:
        names = archive.namelist()
    assert ".zmetadata" in names and "temp/.zarray" in names
    store = zarr.storage.ZipStore(output.path, mode="r")
    with xr.open_zarr(store, consolidated=True, mask_and_scale=False) as ds, opened(run(files["up"], tmp_path)) as whole:
        assert ds.attrs["title"] == "a test grid" and "geomesh netcdf transformer" in ds.attrs["history"]
        assert ds["temp"].attrs["scale_factor"] == SCALE and ds["temp"].attrs["_FillValue"] == FILL
        assert (ds.sizes["lat"], ds.sizes["lon"]) == (10, 10)
        np.testing.assert_array_equal(ds["temp"].values, whole["temp"].sel(lat=ds["lat"], lon=ds["lon"]).values)
        assert ds["time"].dtype.kind == "M"
    group = zarr.open_group(zarr.storage.ZipStore(output.path, mode="r"), mode="r")
    assert group.metadata.zarr_format == 2


def test_cog_output_has_a_band_per_variable_north_up(files: dict[str, Path], tmp_path: Path) -> None:
    output = run(files["up"], tmp_path, TIFF, variables=("mask",), temporal=TimeRange(datetime(2020, 1, 3, tzinfo=UTC), None),
                 bbox=BBox(-10, -10, 10, 0))
    assert output.file_name == "grid_up_mask_subsetted.tif"
    with rasterio.open(output.path) as tiff, opened(run(files["up"], tmp_path)) as whole:
        assert tiff.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert tiff.count == 1 and tiff.descriptions == ("mask",)
        assert tiff.crs.to_epsg() == 4326 and tiff.transform.e < 0
        assert tiff.bounds == pytest.approx((-10, -10, 10, 0))
        assert tiff.nodata == 255 and tiff.tags()["title"] == "a test grid"
        expected = whole["mask"].isel(time=2).sel(lat=slice(-10, 0), lon=slice(-10, 10)).values[::-1]
        np.testing.assert_array_equal(tiff.read(1), expected)


def test_cog_output_needs_one_step_of_other_dimensions(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(RequestValidationError, match="mask also has time=3"):
        run(files["up"], tmp_path, TIFF, variables=("mask",))
    output = run(files["up"], tmp_path, TIFF, dimensions=(DimensionRange("lev", 500, 500),),
                 temporal=TimeRange(None, datetime(2020, 1, 1, 12, tzinfo=UTC)), grid=grid_spec("EPSG:6933", None, [], [], 20, None))
    with rasterio.open(output.path) as tiff:
        assert tiff.count == 2 and tiff.descriptions == ("temp", "mask") and tiff.crs.to_epsg() == 6933 and tiff.width == 20


def test_a_swath_converts_to_zarr_but_takes_no_bbox(files: dict[str, Path], tmp_path: Path) -> None:
    output = run(files["swath"], tmp_path, ZARR)
    assert output.file_name == "swath.zarr.zip" and output.bbox is None
    with xr.open_zarr(zarr.storage.ZipStore(output.path, mode="r"), consolidated=True) as ds, xr.open_dataset(files["swath"]) as source:
        assert ds["lat"].dims == ("along", "across") and ds["brightness"].attrs["units"] == "K"
        np.testing.assert_array_equal(ds["brightness"].values, source["brightness"].values)
        np.testing.assert_array_equal(ds["lon"].values, source["lon"].values)
    with pytest.raises(UnsupportedOperationError, match="2-D latitude/longitude"):
        run(files["swath"], tmp_path, ZARR, bbox=BBox(100, -20, 101, -19))


def _item(path: Path, media_type: str = "", **fields: object) -> transformer_pb2.WorkItem:
    granule = types_pb2.Granule(id="G1-TEST", name="grid_up.nc", links=[types_pb2.DataLink(href=path.as_uri())])
    return transformer_pb2.WorkItem(granule=granule, output=request_pb2.OutputOptions(format=media_type), **fields)


def test_work_items_in_domain_terms(files: dict[str, Path]) -> None:
    item = _item(files["up"], dimensions=[types_pb2.DimensionSubset(name="lev", max=850.0)])
    item.temporal.start.FromDatetime(datetime(2020, 1, 2, tzinfo=UTC))
    request = _request(item)
    assert request.media_type == NETCDF4 and request.source.local_path == files["up"]
    assert request.dimensions == (DimensionRange("lev", None, 850.0),)
    assert request.temporal == TimeRange(datetime(2020, 1, 2, tzinfo=UTC), None)
    assert _request(_item(files["up"], "application/x-zarr; version=2")).media_type == ZARR
    with pytest.raises(UnsupportedOperationError, match="it writes these formats: application/x-netcdf4, image/tiff, application/x-zarr"):
        _request(_item(files["up"], "image/png"))
    with pytest.raises(UnsupportedOperationError, match="shape subsets"):
        _request(_item(files["up"], shape=types_pb2.Shape(content=b"{}", media_type="application/geo+json")))
    with pytest.raises(RequestValidationError, match="outputCrs"):
        _request(_with_crs(_item(files["up"]), "not a CRS at all"))


def _request(item: transformer_pb2.WorkItem) -> NetcdfRequest:
    return netcdf_request(item, Source(item.granule.id, item.granule.links[0].href))


def _with_crs(item: transformer_pb2.WorkItem, crs: str) -> transformer_pb2.WorkItem:
    item.output.crs = crs
    return item


async def test_the_grpc_service_streams_the_output(files: dict[str, Path], tmp_path: Path) -> None:
    server = await serve(TransformerSettings(family="netcdf", port=0, scratch_dir=tmp_path, workers=1))
    try:
        async with open_channel(server.address, "transformer") as channel:
            stub = transformer_pb2_grpc.TransformerStub(channel)
            info = await stub.Describe(transformer_pb2.DescribeRequest())
            assert info.family == "netcdf" and list(info.output_formats) == [NETCDF4, TIFF, ZARR]
            item = _item(files["up"], variables=["mask"])
            item.bbox.CopyFrom(types_pb2.BBox(west=0, south=0, east=5, north=5))
            chunks = [chunk async for chunk in stub.Transform(item)]
            header = chunks[0].header
            assert (header.file_name, header.media_type) == ("grid_up_mask_subsetted.nc4", NETCDF4)
            body = b"".join(chunk.data for chunk in chunks[1:])
            assert len(body) == header.size_bytes
            with netCDF4.Dataset("memory", memory=body) as nc:
                assert nc["mask"].shape == (3, 5, 5)
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.Transform(_item(files["up"], variables=["purple"])).read()
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await server.stop(grace=1)
    assert not list(tmp_path.glob("geomesh-netcdf-*"))  # scratch files are gone


def test_granules_on_several_threads_at_once(files: dict[str, Path], tmp_path: Path) -> None:
    """netCDF-C is not thread-safe: without the family's lock this crashed the process now and then."""
    from concurrent.futures import ThreadPoolExecutor

    def one(index: int):
        media_type = (NETCDF4, ZARR, TIFF)[index % 3]
        return run(files["up" if index % 2 else "down"], tmp_path, media_type, variables=("mask",),
                   temporal=TimeRange(None, datetime(2020, 1, 1, 12, tzinfo=UTC)), bbox=BBox(-10, -5, 10, 5))

    with ThreadPoolExecutor(4) as pool:
        outputs = list(pool.map(one, range(24)))
    assert all(output.size_bytes > 0 and output.bbox == BBox(-10, -5, 10, 5) for output in outputs)


def test_an_unreadable_granule_names_the_granule_not_the_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """netCDF-C's message names the file (a scratch copy, for a remote granule): it goes to the log only."""
    broken = tmp_path / "broken.nc"
    broken.write_bytes(b"CDF\x01 not really")
    with pytest.raises(TransformError) as raised:
        run(broken, tmp_path)
    assert raised.value.message == (
        "Cannot process granule G1-TEST: it could not be read, subset or written as application/x-netcdf4."
    )
    assert str(tmp_path) in caplog.text and "G1-TEST" in caplog.text  # the detail is kept for the operator
    assert [r.levelname for r in caplog.records if str(tmp_path) in r.getMessage()] == ["WARNING"]
