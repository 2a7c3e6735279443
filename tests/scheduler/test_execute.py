"""The Scheduler's Execute, called over gRPC as internal services do, and transformer failover."""

from __future__ import annotations

from pathlib import Path

import pytest
from rasterio.io import MemoryFile

from catalog.service import serve as serve_catalog
from geomesh.errors import RequestValidationError
from geomesh.rpc import open_channel, rpc_errors
from geomesh.settings import CatalogSettings, SchedulerSettings
from geomesh.v1 import request_pb2, scheduler_pb2_grpc, types_pb2
from scheduler.service import serve as serve_scheduler
from tests.conftest import GLOBAL_GRANULE, HARMONY_EXAMPLE, Mesh


async def execute(address: str, request: request_pb2.DataRequest) -> tuple[types_pb2.Granule | None, bytes, int]:
    header, body, chunks = None, bytearray(), 0
    async with open_channel(address, "scheduler") as channel:
        with rpc_errors():
            async for message in scheduler_pb2_grpc.SchedulerStub(channel).Execute(request):
                if message.WhichOneof("item") == "header":
                    header = message.header
                else:
                    body.extend(message.data)
                    chunks += 1
    return header, bytes(body), chunks


async def test_execute_streams_a_header_then_the_bytes(mesh: Mesh) -> None:
    header, body, chunks = await execute(
        mesh.scheduler_address,
        request_pb2.DataRequest(collection=HARMONY_EXAMPLE, granule_ids=[GLOBAL_GRANULE], request_id="test-1"),
    )
    assert header.media_type == "image/tiff" and header.granule_id == GLOBAL_GRANULE
    assert header.file_name == "001_00_7f00ff_global.tif"
    assert chunks >= 1 and (header.size_bytes in (0, len(body)))
    with MemoryFile(body).open() as dataset:
        assert dataset.count == 4


async def test_errors_come_back_as_geomesh_errors(mesh: Mesh) -> None:
    with pytest.raises(RequestValidationError, match="Coverages were not found for the provided variables: x"):
        await execute(mesh.scheduler_address, request_pb2.DataRequest(collection=HARMONY_EXAMPLE, variables=["x"]))
    with pytest.raises(RequestValidationError, match="No matching granules found."):
        await execute(mesh.scheduler_address, request_pb2.DataRequest(collection=HARMONY_EXAMPLE, granule_ids=["G0-NONE"]))
    with pytest.raises(RequestValidationError, match="user is required"):
        await execute(
            mesh.scheduler_address,
            request_pb2.DataRequest(collection=HARMONY_EXAMPLE, granule_ids=[GLOBAL_GRANULE], force_async=True),
        )


async def test_force_async_makes_a_job_even_for_one_granule(mesh: Mesh) -> None:
    async with open_channel(mesh.scheduler_address, "scheduler") as channel:
        request = request_pb2.DataRequest(collection=HARMONY_EXAMPLE, granule_ids=[GLOBAL_GRANULE], force_async=True, user="carol")
        [message] = [m async for m in scheduler_pb2_grpc.SchedulerStub(channel).Execute(request)]
    assert (message.job.username, message.job.status, message.job.num_input_granules) == ("carol", "running", 1)


async def test_an_unreachable_replica_is_skipped(mesh: Mesh, tmp_path: Path, unused_tcp_port: int) -> None:
    registry = tmp_path / "services.yml"
    registry.write_text(
        "services:\n"
        "  - name: harmony/gdal\n"
        f"    collections: [{HARMONY_EXAMPLE}]\n"
        f"    transformer: {{addresses: ['127.0.0.1:{unused_tcp_port}', '{mesh.transformer_address}']}}\n"
        "    capabilities: {subsetting: {variable: true}, output_formats: [image/tiff]}\n"
    )
    catalog = await serve_catalog(CatalogSettings(port=0, data_dir=mesh.data_dir, services_file=registry))
    scheduler = await serve_scheduler(SchedulerSettings(port=0, catalog_address=catalog.address, data_dir=tmp_path))
    try:
        for _ in range(2):  # round-robin starts on each replica in turn: both calls must succeed
            header, body, _ = await execute(
                scheduler.address,
                request_pb2.DataRequest(collection=HARMONY_EXAMPLE, granule_ids=[GLOBAL_GRANULE], variables=["red_var"]),
            )
            assert header.file_name == "001_00_7f00ff_global_red_var.tif" and body
    finally:
        await scheduler.stop(grace=1)
        await catalog.stop(grace=1)
