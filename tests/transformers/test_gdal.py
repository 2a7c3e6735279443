"""The gdal transformer on a real gRPC server, with small real GeoTIFFs made here."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.io import MemoryFile
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds

from geomesh.errors import (
    RequestValidationError,
    TransformError,
    UnsupportedOperationError,
)
from geomesh.model import BBox, TimeRange
from geomesh.rpc import open_channel, rpc_errors
from geomesh.settings import TransformerSettings
from geomesh.v1 import request_pb2, transformer_pb2, transformer_pb2_grpc, types_pb2
from transformers.gdal.datasets import DatasetPool
from transformers.gdal.service import TransformerServer, serve
from transformers.gdal.subset import _pixel_span, output_file_name
from transformers.sources import DataAccess, Source

CHUNK = 16 * 1024
GRANULE_ID = "G1233800343-EEDTEST"
GRANULE_NAME = "001_00_7f00ff_global"
TEMPORAL = TimeRange(datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 1, 1, 1, 59, 59, tzinfo=UTC))
RGBA = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("granules")


@pytest.fixture(scope="module")
def global_tif(data_dir: Path) -> Path:
    """Like the harmony_example granules: 4 bands of noise (so outputs do not compress), 1 degree."""
    path = data_dir / "global.tif"
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, size=(4, 180, 360), dtype=np.uint8)
    with rasterio.open(
        path, "w", driver="GTiff", width=360, height=180, count=4, dtype="uint8",
        crs="EPSG:4326", transform=from_origin(-180, 90, 1, 1), nodata=0,
    ) as dst:
        dst.write(data)
        dst.descriptions = ("red_var", "green_var", "blue_var", "alpha_var")
        dst.colorinterp = RGBA
        dst.update_tags(HARMONY_HEX_COLOR="7f00ff")
        dst.update_tags(3, units_note="blue")
    return path


@pytest.fixture(scope="module")
def utm_tif(data_dir: Path) -> Path:
    """A projected float granule with 5 bands and nodata, 1 km pixels in UTM 33N."""
    path = data_dir / "utm.tif"
    data = np.arange(5 * 100 * 100, dtype=np.float32).reshape(5, 100, 100)
    data[:, 0, 0] = -9999
    with rasterio.open(
        path, "w", driver="GTiff", width=100, height=100, count=5, dtype="float32",
        crs="EPSG:32633", transform=from_origin(400_000, 5_000_000, 1000, 1000), nodata=-9999,
    ) as dst:
        dst.write(data)
        dst.descriptions = tuple(f"b{i}" for i in range(1, 6))
    return path


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scratch")


@pytest.fixture(scope="module")
async def server(scratch: Path) -> AsyncIterator[TransformerServer]:
    settings = TransformerSettings(port=0, workers=4, open_datasets=8, chunk_bytes=CHUNK, scratch_dir=scratch)
    running = await serve(settings)
    yield running
    await running.stop(0)


@pytest.fixture(scope="module")
async def stub(server: TransformerServer) -> AsyncIterator[transformer_pb2_grpc.TransformerStub]:
    async with open_channel(server.address, "transformer") as channel:
        yield transformer_pb2_grpc.TransformerStub(channel)


@pytest.fixture(autouse=True)
async def no_leftovers(server: TransformerServer, data_dir: Path) -> AsyncIterator[None]:
    """Every test must leave the scratch folder empty and no sidecar beside the sources."""
    yield
    assert server.transformer is not None
    scratch = server.transformer.scratch
    for _ in range(100):  # a cancelled call's output is removed when its worker finishes
        if not scratch.files():
            break
        await asyncio.sleep(0.01)
    assert scratch.files() == []
    assert [p.name for p in data_dir.iterdir() if p.suffix != ".tif"] == []


def work_item(
    path: Path | str,
    *,
    variables: tuple[str, ...] = (),
    bbox: BBox | None = None,
    media_type: str = "image/tiff",
    crs: str = "",
) -> transformer_pb2.WorkItem:
    href = path.as_uri() if isinstance(path, Path) else path
    granule = types_pb2.Granule(
        id=GRANULE_ID, name=GRANULE_NAME, collection_id="C1233800302-EEDTEST",
        bbox=BBox(-180, -90, 180, 90).to_proto(), temporal=TEMPORAL.to_proto(),
        links=[types_pb2.DataLink(href=href, media_type="image/tiff")],
    )
    item = transformer_pb2.WorkItem(
        request_id="r1", granule=granule, variables=variables,
        output=request_pb2.OutputOptions(format=media_type, crs=crs),
    )
    if bbox is not None:
        item.bbox.CopyFrom(bbox.to_proto())
    return item


async def transform(
    stub: transformer_pb2_grpc.TransformerStub, item: transformer_pb2.WorkItem
) -> tuple[transformer_pb2.OutputHeader, list[bytes]]:
    with rpc_errors():
        messages = [message async for message in stub.Transform(item, timeout=10)]
    assert messages[0].WhichOneof("item") == "header"
    assert all(message.WhichOneof("item") == "data" for message in messages[1:])
    chunks = [message.data for message in messages[1:]]
    assert len(b"".join(chunks)) == messages[0].header.size_bytes
    return messages[0].header, chunks


def test_our_transformers_package_is_the_one_imported() -> None:
    import transformers

    assert transformers.__doc__ is not None and "geomesh" in transformers.__doc__


async def test_describe(stub: transformer_pb2_grpc.TransformerStub) -> None:
    info = await stub.Describe(transformer_pb2.DescribeRequest(), timeout=5)
    assert info.family == "gdal"
    assert list(info.output_formats) == ["image/tiff", "image/png", "image/gif", "image/jpeg"]
    assert list(info.operations) == ["variable_subset", "bbox_subset", "shape_subset", "reprojection", "render"]


async def test_variable_subset(stub: transformer_pb2_grpc.TransformerStub, global_tif: Path) -> None:
    header, chunks = await transform(stub, work_item(global_tif, variables=("blue_var",)))
    assert header.file_name == f"{GRANULE_NAME}_blue_var.tif"
    assert header.media_type == "image/tiff"
    assert header.granule_id == GRANULE_ID
    assert TimeRange.from_proto(header.temporal) == TEMPORAL
    assert BBox.from_proto(header.bbox) == BBox(-180, -90, 180, 90)
    with MemoryFile(b"".join(chunks)) as memory, memory.open() as out, rasterio.open(global_tif) as src:
        assert out.count == 1
        assert out.descriptions == ("blue_var",)
        assert out.colorinterp == (ColorInterp.blue,)
        assert out.tags()["HARMONY_HEX_COLOR"] == "7f00ff"
        assert out.tags(1)["units_note"] == "blue"
        assert out.nodata == 0 and out.crs == src.crs and out.transform == src.transform
        np.testing.assert_array_equal(out.read(1), src.read(3))


async def test_bbox_subset(stub: transformer_pb2_grpc.TransformerStub, global_tif: Path) -> None:
    wanted = BBox(110, -45.75, 156, -9)
    header, chunks = await transform(stub, work_item(global_tif, bbox=wanted))
    assert header.file_name == f"{GRANULE_NAME}_subsetted.tif"
    with MemoryFile(b"".join(chunks)) as memory, memory.open() as out, rasterio.open(global_tif) as src:
        assert out.crs.to_epsg() == 4326
        assert out.count == 4
        assert out.descriptions == ("red_var", "green_var", "blue_var", "alpha_var")
        assert list(out.colorinterp) == RGBA
        half = abs(src.res[0]) / 2
        for got, asked in zip(out.bounds, (wanted.west, wanted.south, wanted.east, wanted.north), strict=True):
            assert abs(got - asked) <= half + 1e-9
        assert BBox.from_proto(header.bbox) == BBox(*out.bounds)
        window = src.window(*out.bounds)
        np.testing.assert_array_equal(out.read(), src.read(window=window))


async def test_tiny_bbox_gives_one_pixel(stub: transformer_pb2_grpc.TransformerStub, global_tif: Path) -> None:
    header, chunks = await transform(stub, work_item(global_tif, bbox=BBox(10.2, 20.2, 10.3, 20.3)))
    with MemoryFile(b"".join(chunks)) as memory, memory.open() as out:
        assert (out.width, out.height) == (1, 1)
        assert out.bounds == (10, 20, 11, 21)


async def test_png_output(stub: transformer_pb2_grpc.TransformerStub, global_tif: Path) -> None:
    item = work_item(global_tif, variables=("red_var", "green_var", "blue_var"), bbox=BBox(0, 0, 40, 30),
                     media_type="image/png")
    header, chunks = await transform(stub, item)
    assert header.media_type == "image/png"
    assert header.file_name == f"{GRANULE_NAME}_subsetted.png"
    assert BBox.from_proto(header.bbox) == BBox(0, 0, 40, 30)
    assert b"".join(chunks).startswith(b"\x89PNG")
    with MemoryFile(b"".join(chunks)) as memory, memory.open() as out, rasterio.open(global_tif) as src:
        assert out.driver == "PNG"
        assert (out.count, out.width, out.height) == (3, 40, 30)
        np.testing.assert_array_equal(out.read(), src.read([1, 2, 3], window=src.window(0, 0, 40, 30)))


async def test_png_stretches_float_data(stub: transformer_pb2_grpc.TransformerStub, utm_tif: Path) -> None:
    header, chunks = await transform(stub, work_item(utm_tif, variables=("b2",), media_type="image/png"))
    assert header.file_name == f"{GRANULE_NAME}_b2.png"
    with MemoryFile(b"".join(chunks)) as memory, memory.open() as out:
        data = out.read(1)
        assert out.count == 1 and data.dtype == np.uint8
        assert data[0, 0] == 0 and data[0, 1] == 0 and data.max() == 255  # nodata, then the minimum


async def test_projected_bbox_subset(stub: transformer_pb2_grpc.TransformerStub, utm_tif: Path) -> None:
    with rasterio.open(utm_tif) as src:
        extent = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    middle = ((extent[0] + extent[2]) / 2, (extent[1] + extent[3]) / 2)
    wanted = BBox(middle[0] - 0.1, middle[1] - 0.1, middle[0] + 0.1, middle[1] + 0.1)
    header, chunks = await transform(stub, work_item(utm_tif, bbox=wanted))
    with MemoryFile(b"".join(chunks)) as memory, memory.open() as out:
        assert out.crs.to_epsg() == 32633 and out.count == 5 and out.dtypes[0] == "float32"
        assert 14 <= out.width <= 20 and 20 <= out.height <= 25  # 0.2 degrees at ~45N in 1 km pixels
    got = BBox.from_proto(header.bbox)
    assert got.intersects(wanted)
    assert all(abs(a - b) < 0.02 for a, b in zip(
        (got.west, got.south, got.east, got.north), (wanted.west, wanted.south, wanted.east, wanted.north), strict=True))


async def test_large_output_streams_in_bounded_chunks(
    stub: transformer_pb2_grpc.TransformerStub, global_tif: Path
) -> None:
    header, chunks = await transform(stub, work_item(global_tif))
    assert header.file_name == f"{GRANULE_NAME}.tif"
    assert header.size_bytes > 4 * CHUNK
    assert len(chunks) > 4
    assert all(0 < len(chunk) <= CHUNK for chunk in chunks)
    with MemoryFile(b"".join(chunks)) as memory, memory.open() as out, rasterio.open(global_tif) as src:
        np.testing.assert_array_equal(out.read(), src.read())


async def test_concurrent_requests(stub: transformer_pb2_grpc.TransformerStub, global_tif: Path) -> None:
    boxes = [BBox(-180 + 40 * i, -60, -150 + 40 * i, 60) for i in range(8)]
    results = await asyncio.gather(*(transform(stub, work_item(global_tif, bbox=box)) for box in boxes))
    for box, (header, chunks) in zip(boxes, results, strict=True):
        assert BBox.from_proto(header.bbox) == box
        with MemoryFile(b"".join(chunks)) as memory, memory.open() as out:
            assert (out.width, out.height, out.count) == (30, 120, 4)


async def test_cancel_mid_stream_leaves_nothing(stub: transformer_pb2_grpc.TransformerStub, global_tif: Path) -> None:
    call = stub.Transform(work_item(global_tif), timeout=10)
    first = await call.read()
    assert first.WhichOneof("item") == "header"
    call.cancel()
    assert call.cancelled()


@pytest.mark.parametrize(
    ("changes", "error", "words"),
    [
        ({"variables": ("blue_var", "nope_var")}, RequestValidationError, "nope_var"),
        ({"bbox": BBox(-10, -80, 10, -70), "path": "utm"}, RequestValidationError, "does not intersect granule"),
        ({"media_type": "application/x-zarr"}, UnsupportedOperationError, "image/tiff, image/png, image/gif, image/jpeg"),
        ({"crs": "not a crs"}, RequestValidationError, 'query parameter "crs/outputCrs" could not be parsed'),
        ({"media_type": "image/png", "path": "utm"}, RequestValidationError, "PNG holds at most 4 variables"),
        ({"path": "missing"}, TransformError, GRANULE_ID),
    ],
)
async def test_errors(
    stub: transformer_pb2_grpc.TransformerStub,
    global_tif: Path,
    utm_tif: Path,
    changes: dict[str, object],
    error: type[Exception],
    words: str,
) -> None:
    paths = {"global": global_tif, "utm": utm_tif, "missing": global_tif.parent / "missing.tif"}
    path = paths[str(changes.pop("path", "global"))]
    with pytest.raises(error) as raised:
        await transform(stub, work_item(path, **changes))  # type: ignore[arg-type]
    assert type(raised.value) is error
    assert words in str(raised.value)


async def test_source_crs_requested_is_not_a_reprojection(
    stub: transformer_pb2_grpc.TransformerStub, global_tif: Path
) -> None:
    header, _ = await transform(stub, work_item(global_tif, variables=("red_var",), crs="CRS:84"))
    assert header.file_name == f"{GRANULE_NAME}_red_var.tif"


async def test_unsupported_operations_are_refused(stub: transformer_pb2_grpc.TransformerStub, global_tif: Path) -> None:
    item = work_item(global_tif)
    item.output.interpolation = "bilinear"  # accepted since reprojection came, as shapes since shape subsetting
    item.output.width = 100
    item.dimensions.add(name="depth", min=0, max=10)
    with pytest.raises(UnsupportedOperationError, match="support dimension subsets.*depth"):
        await transform(stub, item)


def test_pixel_span_rounds_to_half_pixels() -> None:
    assert _pixel_span(2.0, 5.0, 10) == (2, 5)
    assert _pixel_span(2.5, 5.5, 10) == (2, 6)  # half-covered pixels go outward
    assert _pixel_span(2.6, 5.4, 10) == (3, 5)
    assert _pixel_span(-3.0, 12.0, 10) == (0, 10)
    assert _pixel_span(4.2, 4.3, 10) == (4, 5)


def test_paths_and_names() -> None:
    access = DataAccess()
    assert access.gdal_path(Source("G1", "file:///data/a%20b.tif")) == "/data/a b.tif"
    assert access.gdal_path(Source("G1", "https://host/x.tif")) == "/vsicurl/https://host/x.tif"
    assert access.gdal_path(Source("G1", "s3://bucket/key/x.tif")) == "/vsis3/bucket/key/x.tif"
    assert access.gdal_path(Source("G1", "/data/x.tif")) == "/data/x.tif"
    assert output_file_name("g.tif", ["/grp/blue var"], True, "image/png") == "g_grp_blue_var_subsetted.png"
    assert output_file_name("MOD.A2020.006", ["a", "b"], False, "image/tiff") == "MOD.A2020.006.tif"


def test_dataset_pool_lends_each_handle_to_one_thread(global_tif: Path, utm_tif: Path) -> None:
    pool = DatasetPool(max_idle=2)
    with pool.open(Source("G1", str(global_tif))) as first, pool.open(Source("G1", str(global_tif))) as second:
        assert first is not second
    assert pool.idle_count == 2
    with pool.open(Source("G1", str(global_tif))) as again:
        assert again in (first, second)
    with pool.open(Source("G2", str(utm_tif))):
        pass
    assert pool.idle_count == 2  # the least recently used global handle was closed
    assert first.closed != second.closed

    seen: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(20):
            with pool.open(Source("G1", str(global_tif))) as dataset:
                with lock:
                    assert id(dataset) not in seen
                    seen.append(id(dataset))
                dataset.read(1, window=((0, 8), (0, 8)))
                with lock:
                    seen.remove(id(dataset))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pool.close()
    assert pool.idle_count == 0
    assert seen == []


def test_a_gdal_failure_names_the_granule_not_gdals_files(
    global_tif: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """GDAL's CPLE_* errors are no RasterioError: they reached the client as "internal error: CPLE_AppDefinedError",
    with messages that name /vsimem/ and scratch files."""
    from rasterio._err import CPLE_AppDefinedError

    from transformers.gdal import subset as subset_module

    def failing_write(*args: object) -> Path:
        raise CPLE_AppDefinedError(1, 1, f"/vsimem/geomesh-{tmp_path.name}.tif: TIFFAppendToStrip:Write error at scanline 0")

    monkeypatch.setattr(subset_module, "_write", failing_write)
    request = subset_module.SubsetRequest(GRANULE_ID, GRANULE_NAME, Source(GRANULE_ID, global_tif.as_uri()), "image/tiff")
    with pytest.raises(TransformError) as raised:
        subset_module.subset(request, DatasetPool(0), tmp_path)
    assert raised.value.message == f"Cannot process granule {GRANULE_ID}: GDAL could not read, warp or write it as asked."
    assert "TIFFAppendToStrip" in caplog.text and global_tif.as_uri() in caplog.text
