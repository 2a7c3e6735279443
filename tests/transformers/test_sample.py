"""The gdal transformer's Sample (WMS GetFeatureInfo) on a real gRPC server, on small GeoTIFFs written here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from geomesh.errors import RequestValidationError, UnsupportedOperationError
from geomesh.rpc import open_channel, rpc_errors
from geomesh.settings import TransformerSettings
from geomesh.v1 import transformer_pb2, transformer_pb2_grpc, types_pb2
from tests.conftest import Mesh
from transformers.gdal.service import TransformerServer, serve

MERCATOR = 20037508.342789244


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[TransformerServer]:
    running = await serve(TransformerSettings(port=0, workers=2, open_datasets=8))
    yield running
    await running.stop(0)


@pytest.fixture(scope="module")
async def stub(server: TransformerServer) -> AsyncIterator[transformer_pb2_grpc.TransformerStub]:
    async with open_channel(server.address, "transformer") as channel:
        yield transformer_pb2_grpc.TransformerStub(channel)


def write(path: Path, data: np.ndarray, crs: str, transform: Affine, nodata: float | None = None) -> types_pb2.Granule:
    """A GeoTIFF with bands named temperature, pressure; returned as the scheduler sends granules."""
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(data)
        for band, name in enumerate(("temperature", "pressure")[: data.shape[0]], start=1):
            dst.set_band_description(band, name)
    return types_pb2.Granule(id=path.stem, links=[types_pb2.DataLink(href=path.as_uri(), media_type="image/tiff")])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, types_pb2.Granule]:
    folder = tmp_path_factory.mktemp("sample")
    # 10 x 10 one-degree pixels over lon 0..10, lat 0..10: value = 100 * row + col, -999 (nodata) in row 0.
    grid = (np.arange(10)[:, None] * 100 + np.arange(10)[None, :]).astype(np.float32)
    geographic = np.stack([grid, grid + 0.5])
    geographic[:, 0] = -999
    newer = np.where(geographic[:, :, :5] == -999, np.float32(-999), geographic[:, :, :5] * 2)
    # The same values in Web Mercator, one 100 km pixel each, from (0, 0) eastwards and northwards.
    mercator = np.stack([(np.arange(10)[:, None] * 10 + np.arange(10)[None, :]).astype(np.int16)])
    return {
        "old": write(folder / "old.tif", geographic, "EPSG:4326", Affine(1, 0, 0, 0, -1, 10), nodata=-999),
        "new": write(folder / "new.tif", newer, "EPSG:4326", Affine(1, 0, 0, 0, -1, 10), nodata=-999),
        "mercator": write(folder / "mercator.tif", mercator, "EPSG:3857", Affine(1e5, 0, 0, 0, -1e5, 1e6)),
    }


def sample_request(*granules: types_pb2.Granule, i: int, j: int, **fields: object) -> transformer_pb2.SampleRequest:
    # A 20 x 20 map of lon 0..10, lat 0..10 (EPSG:4326 x first): map pixel (i, j) lies in source pixel (i // 2, j // 2).
    values: dict[str, object] = {"crs": "EPSG:4326", "min_x": 0, "min_y": 0, "max_x": 10, "max_y": 10, "width": 20, "height": 20,
                                 "variables": ["temperature", "pressure"], "feature_count": 1}
    values.update(fields)
    return transformer_pb2.SampleRequest(request_id="s1", granules=granules, i=i, j=j, **values)


async def call(stub: transformer_pb2_grpc.TransformerStub, request: transformer_pb2.SampleRequest) -> transformer_pb2.Samples:
    with rpc_errors():
        return await stub.Sample(request, timeout=10)


async def test_the_newest_granule_with_data_answers(stub: transformer_pb2_grpc.TransformerStub, files: dict) -> None:
    answer = await call(stub, sample_request(files["new"], files["old"], i=7, j=9))  # source row 4, col 3
    assert (answer.lon, answer.lat) == (3.75, 5.25)
    [granule] = answer.granules
    assert granule.granule_id == "new"
    assert [(v.variable, v.value, v.data_type) for v in granule.values] == [("temperature", 806.0, "float32"), ("pressure", 807.0, "float32")]


async def test_feature_count_reports_older_granules_too(stub: transformer_pb2_grpc.TransformerStub, files: dict) -> None:
    answer = await call(stub, sample_request(files["new"], files["old"], i=7, j=9, feature_count=5))
    assert [g.granule_id for g in answer.granules] == ["new", "old"]
    assert [v.value for v in answer.granules[1].values] == [403.0, 403.5]


async def test_granules_without_data_there_are_skipped(stub: transformer_pb2_grpc.TransformerStub, files: dict) -> None:
    # Column 8: off the narrower new granule; row 0: nodata in both; off both to the east.
    off_new = await call(stub, sample_request(files["new"], files["old"], i=17, j=9))
    assert [g.granule_id for g in off_new.granules] == ["old"]
    assert [v.value for v in off_new.granules[0].values] == [408.0, 408.5]
    assert not (await call(stub, sample_request(files["new"], files["old"], i=3, j=1))).granules
    assert not (await call(stub, sample_request(files["old"], i=5, j=5, min_x=20, max_x=30))).granules


async def test_a_map_in_another_crs_than_the_granule(stub: transformer_pb2_grpc.TransformerStub, files: dict) -> None:
    # A Web Mercator source read from a geographic map, and a geographic source from a Web Mercator map.
    answer = await call(stub, sample_request(files["mercator"], i=7, j=9, variables=["temperature"]))
    x, y = 3.75 / 180 * MERCATOR, 5.25  # lat 5.25 is 585 km north in Web Mercator
    row = int((1e6 - 6378137.0 * np.log(np.tan(np.pi / 4 + np.radians(y) / 2))) // 1e5)
    assert [v.value for v in answer.granules[0].values] == [row * 10 + int(x // 1e5)]
    assert answer.granules[0].values[0].data_type == "int16"
    mercator_map = sample_request(files["old"], i=1, j=0, crs="EPSG:3857", min_x=0, min_y=0, max_x=1e6, max_y=1e6, width=2, height=2)
    answer = await call(stub, mercator_map)  # centre 750 km east, 750 km north: lon 6.74, lat 6.72
    assert answer.lon == pytest.approx(6.737, abs=1e-3) and answer.lat == pytest.approx(6.722, abs=1e-3)
    assert [v.value for v in answer.granules[0].values] == [306.0, 306.5]


async def test_unknown_variables_and_pixels_off_the_map_are_refused(stub: transformer_pb2_grpc.TransformerStub, files: dict) -> None:
    with pytest.raises(RequestValidationError, match="no variable named humidity"):
        await call(stub, sample_request(files["old"], i=5, j=5, variables=["humidity"]))
    with pytest.raises(RequestValidationError, match="not on the 20x20 map"):
        await call(stub, sample_request(files["old"], i=20, j=5))


async def test_families_that_draw_no_maps_refuse_sample(mesh: Mesh) -> None:
    async with open_channel(mesh.transformer_addresses["netcdf"], "transformer") as channel:
        with pytest.raises(UnsupportedOperationError, match="no map pixels to query"):
            await call(transformer_pb2_grpc.TransformerStub(channel), sample_request(i=0, j=0))
