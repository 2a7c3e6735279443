"""harmony_example v2 (NetCDF4) through a real mesh: the netcdf transformer behind the rangeset and jobs APIs."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import grpc
import netCDF4
import pyproj
import pytest
import xarray as xr
import zarr
from rasterio.io import MemoryFile

from catalog.registry import Operations, Registry
from geomesh.errors import UnsupportedOperationError
from geomesh.rpc import open_channel
from geomesh.v1 import request_pb2, transformer_pb2, transformer_pb2_grpc, types_pb2
from tests.conftest import Mesh
from tests.edge.test_coverages import get
from tests.edge.test_jobs import call, submit, wait_for
from tests.transformers.test_netcdf import write_swath

V2 = "C1234088182-EEDTEST"
L2_SWATH = "C1233860183-EEDTEST"
FIRST_DAY = "G1234088191-EEDTEST"  # 001_00_7f00ff_global
SEED_BBOX = "subset=lat(-45.75:-9)&subset=lon(110:156)"
TWO_DAYS = 'subset=time("2020-01-01T00:00:00Z":"2020-01-02T01:00:00Z")'


def nc(body: bytes) -> netCDF4.Dataset:
    return netCDF4.Dataset("response.nc4", memory=body)


async def test_the_collection_lists_cmrs_variables(mesh: Mesh) -> None:
    status, _, body = await get(f"{mesh.coverages(V2)}/collections")
    assert status == 200, body
    listing = {collection["id"]: collection for collection in json.loads(body)["collections"]}
    assert list(listing) == [f"{V2}/all", *(f"{V2}/V12340881{n}-EEDTEST" for n in (90, 89, 88, 87))]
    assert listing[f"{V2}/V1234088187-EEDTEST"]["title"] == "red_var harmony_example v2"


async def test_one_granule_bbox_subset_is_sync_netcdf4(mesh: Mesh) -> None:
    status, headers, body = await get(f"{mesh.rangeset(V2)}?granuleId={FIRST_DAY}&{SEED_BBOX}")
    assert status == 200, body
    assert headers["Content-Type"] == "application/x-netcdf4"
    assert 'filename="001_00_7f00ff_global_subsetted.nc4"' in headers["Content-Disposition"]
    with nc(body) as dataset:
        assert dataset["red_var"].dimensions == ("time", "lat", "lon")
        assert dataset["red_var"].shape == (1, 147, 184)  # quarter-degree cells whose centres are inside
        assert dataset["lat"][0] == -45.625 and dataset["lon"][-1] == 155.875
        assert dataset["red_var"].grid_mapping == "crs" and dataset["red_var"]._FillValue == 0
        assert dataset.HARMONY_HEX_COLOR == "7f00ff" and "geomesh netcdf transformer" in dataset.history
        assert dataset["alpha_var"][:].max() == 255  # Australia is land


async def test_variables_as_a_cog_and_reprojected_netcdf(mesh: Mesh) -> None:
    status, headers, body = await get(f"{mesh.rangeset(V2, 'blue_var')}?granuleId={FIRST_DAY}&format=image/tiff")
    assert status == 200, body
    assert 'filename="001_00_7f00ff_global_blue_var.tif"' in headers["Content-Disposition"]
    with MemoryFile(body).open() as tiff:
        assert tiff.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and tiff.descriptions == ("blue_var",)
        assert (tiff.width, tiff.height, tiff.crs.to_epsg()) == (1440, 720, 4326)
        assert tiff.bounds == pytest.approx((-180, -90, 180, 90))
    status, headers, body = await get(
        f"{mesh.rangeset(V2, 'red_var')}?granuleId={FIRST_DAY}&outputCrs=EPSG:6933&width=360"
    )
    assert status == 200, body
    assert 'filename="001_00_7f00ff_global_red_var_regridded.nc4"' in headers["Content-Disposition"]
    with nc(body) as dataset:
        assert pyproj.CRS.from_cf(dataset["crs"].__dict__).equals(pyproj.CRS.from_epsg(6933))
        assert dataset["red_var"].dimensions == ("time", "y", "x") and dataset.dimensions["x"].size == 360
        assert dataset["x"].standard_name == "projection_x_coordinate"


async def test_several_granules_make_a_job_whose_outputs_open(mesh: Mesh) -> None:
    job_id = await submit(mesh, f"{TWO_DAYS}&{SEED_BBOX}", V2)
    job = await wait_for(mesh, job_id)
    data = [link for link in job["links"] if link["rel"] == "data"]
    assert sorted(link["title"] for link in data) == [
        "001_00_7f00ff_global_subsetted.nc4", "002_00_3200ff_global_subsetted.nc4",
    ]
    for link in data:
        assert link["type"] == "application/x-netcdf4"
        assert link["bbox"] == pytest.approx([110, -45.75, 156, -9])
        with nc((await call("GET", link["href"])).content) as dataset:
            assert dataset["blue_var"].shape == (1, 147, 184)


async def test_an_open_ended_time_range_takes_the_last_days(mesh: Mesh) -> None:
    job_id = await submit(mesh, 'subset=time("2020-01-15T00:00:00Z":*)&format=image/tiff', V2)
    job = await wait_for(mesh, job_id)
    assert sorted(link["title"] for link in job["links"] if link["rel"] == "data") == [
        "015_00_ff4c00_global.tif", "016_00_ff0000_global.tif",
    ]


async def test_a_range_starting_at_a_granules_last_second_keeps_its_step(mesh: Mesh) -> None:
    # The catalog's end is inclusive (01:59:59) and the file's time bounds half-open ([00:00, 02:00)).
    query = f'granuleId={FIRST_DAY}&subset=time("2020-01-01T01:59:59Z":"2020-01-01T03:00:00Z")'
    status, headers, body = await get(f"{mesh.rangeset(V2, 'alpha_var')}?{query}")
    assert status == 200, body
    assert 'filename="001_00_7f00ff_global_alpha_var.nc4"' in headers["Content-Disposition"]


async def test_zarr_makes_a_job_with_zipped_stores(mesh: Mesh, tmp_path: Path) -> None:
    job_id = await submit(mesh, f"{TWO_DAYS}&format=application/x-zarr", V2)
    job = await wait_for(mesh, job_id)
    data = [link for link in job["links"] if link["rel"] == "data"]
    assert sorted(link["title"] for link in data) == ["001_00_7f00ff_global.zarr.zip", "002_00_3200ff_global.zarr.zip"]
    assert data[0]["type"] == "application/x-zarr"
    path = tmp_path / data[0]["title"]
    path.write_bytes((await call("GET", data[0]["href"])).content)
    with zipfile.ZipFile(path) as archive:
        assert ".zmetadata" in archive.namelist()
    with xr.open_zarr(zarr.storage.ZipStore(path, mode="r"), consolidated=True) as store:
        assert store["green_var"].shape == (1, 720, 1440) and store.attrs["HARMONY_HEX_COLOR"] in ("7f00ff", "3200ff")


async def test_bad_requests_name_what_the_collection_has(mesh: Mesh) -> None:
    status, _, body = await get(f"{mesh.rangeset(V2, 'purple_var')}?granuleId={FIRST_DAY}")
    assert status == 400
    assert json.loads(body)["description"] == "Error: Coverages were not found for the provided variables: purple_var"

    status, _, body = await get(f"{mesh.rangeset(V2)}?granuleId={FIRST_DAY}&subset=lev(0:10)")
    assert status == 400, body
    error = json.loads(body)
    assert error["code"] == "harmony.RequestValidationError"
    assert 'has no dimension named "lev" (its dimensions: time, lat, lon, nv)' in error["description"]

    status, _, body = await get(f"{mesh.rangeset(V2)}?granuleId={FIRST_DAY}&format=image/png")
    assert status == 422
    assert json.loads(body)["description"].endswith(
        "supported output formats are: application/x-netcdf4, application/x-zarr, image/tiff"
    )


def test_the_registry_sends_v2_to_the_netcdf_transformer_and_swath_zarr_to_a_job() -> None:
    registry = Registry.load()
    default = registry.match(V2, Operations())
    assert default is not None and (default.service.name, default.output_format) == ("harmony/netcdf", "application/x-netcdf4")
    # As in Harmony, Zarr comes only from netcdf-to-zarr: a conversion, always a job, no subsetting.
    plain = registry.match(V2, Operations(output_format="application/x-zarr"))
    assert plain is not None and (plain.service.name, plain.service.maximum_sync_granules) == ("harmony/netcdf-to-zarr", 0)
    with pytest.raises(UnsupportedOperationError, match="spatial subsetting and reformatting to application/x-zarr"):
        registry.match(V2, Operations(bbox_subset=True, output_format="application/x-zarr"))
    swath = registry.match(L2_SWATH, Operations(output_format="application/x-zarr"))
    assert swath is not None and swath.service.name == "harmony/netcdf-to-zarr"
    assert swath.service.maximum_sync_granules == 0  # always a job
    assert swath.service.transformer.addresses == default.service.transformer.addresses


async def test_a_swath_converts_to_zarr_through_the_meshs_netcdf_transformer(mesh: Mesh, tmp_path: Path) -> None:
    """The L2 swath demo files are another module's: a swath-like file written here takes their path."""
    match = Registry.load().match(L2_SWATH, Operations(output_format="application/x-zarr"))
    assert match is not None and mesh.transformer_addresses["netcdf"] in match.service.transformer.addresses
    path = write_swath(tmp_path / "swath_granule.nc")
    item = transformer_pb2.WorkItem(
        granule=types_pb2.Granule(id="G1-SWATH", name="swath_granule.nc", links=[types_pb2.DataLink(href=path.as_uri())]),
        output=request_pb2.OutputOptions(format=match.output_format),
    )
    async with open_channel(mesh.transformer_addresses["netcdf"], "transformer") as channel:
        chunks = [chunk async for chunk in transformer_pb2_grpc.TransformerStub(channel).Transform(item)]
    assert chunks[0].header.file_name == "swath_granule.zarr.zip"
    output = tmp_path / chunks[0].header.file_name
    output.write_bytes(b"".join(chunk.data for chunk in chunks[1:]))
    with xr.open_zarr(zarr.storage.ZipStore(output, mode="r"), consolidated=True) as store:
        assert store["lat"].dims == ("along", "across") and store["brightness"].shape == (30, 12)


async def test_the_swath_demo_granule_to_zarr_is_always_a_job(mesh: Mesh, tmp_path: Path) -> None:
    job_id = await submit(mesh, "granuleId=G1233860486-EEDTEST&format=application/x-zarr", L2_SWATH)
    job = await wait_for(mesh, job_id)
    (link,) = [link for link in job["links"] if link["rel"] == "data"]
    assert link["title"].endswith(".zarr.zip") and link["type"] == "application/x-zarr"
    path = tmp_path / link["title"]
    path.write_bytes((await call("GET", link["href"])).content)
    with xr.open_zarr(zarr.storage.ZipStore(path, mode="r"), consolidated=True) as store:
        latitude = next(store[name] for name in store.variables if store[name].attrs.get("standard_name") == "latitude")
        assert latitude.ndim == 2
        assert set(store.data_vars) >= {"red_var", "green_var", "blue_var", "alpha_var"}


async def test_capabilities_list_both_netcdf_services(mesh: Mesh) -> None:
    status, _, body = await get(f"{mesh.url}/capabilities?collectionId={V2}")
    assert status == 200, body
    capabilities = json.loads(body)
    assert [service["name"] for service in capabilities["services"]] == ["harmony/netcdf", "harmony/netcdf-to-zarr"]
    assert capabilities["outputFormats"] == ["application/x-netcdf4", "image/tiff", "application/x-zarr"]
    assert capabilities["temporalSubset"] and capabilities["bboxSubset"] and capabilities["reproject"]


@pytest.mark.parametrize("collection", [V2, L2_SWATH])
@pytest.mark.parametrize("request_kind", ["GetCapabilities", "GetMap"])
async def test_no_wms_for_collections_whose_service_draws_no_maps(mesh: Mesh, collection: str, request_kind: str) -> None:
    """Their services have no `maps: true` in the registry: no layers are offered that GetMap would refuse."""
    status, _, body = await get(
        f"{mesh.url}/{collection}/wms?SERVICE=WMS&VERSION=1.3.0&REQUEST={request_kind}&LAYERS={collection}&STYLES="
        "&CRS=EPSG:4326&BBOX=-90,-180,90,180&WIDTH=256&HEIGHT=128&FORMAT=image/png"
    )
    assert status == 422
    assert b'code="OperationNotSupported"' in body and f"No service draws maps of {collection}".encode() in body


async def test_a_transformer_that_draws_no_maps_says_so(mesh: Mesh) -> None:
    """Called directly over gRPC (bypassing the scheduler), Render is refused with a reason, not gRPC's bare
    "Method not implemented!"."""
    async with open_channel(mesh.transformer_addresses["netcdf"], "transformer") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await transformer_pb2_grpc.TransformerStub(channel).Render(transformer_pb2.RenderRequest(width=8, height=8))
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED  # UnsupportedOperationError's status: a 422
    assert "The netcdf transformer does not draw maps" in (raised.value.details() or "")


