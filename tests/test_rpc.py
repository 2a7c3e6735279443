"""What every geomesh gRPC server shares: health, reflection, and errors that never leak internals."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from catalog.registry import Registry
from catalog.service import CatalogService
from geomesh.identity import MeshSettings
from geomesh.rpc import open_channel, start_server
from geomesh.v1 import catalog_pb2, catalog_pb2_grpc
from tests.conftest import Mesh


async def test_health_answers_anyone_on_every_service(mesh: Mesh) -> None:
    """Probes (Kubernetes, load balancers) carry no mesh identity."""
    expected = {
        mesh.catalog_address: "geomesh.v1.Catalog",
        mesh.scheduler_address: "geomesh.v1.Scheduler",
        mesh.transformer_address: "geomesh.v1.Transformer",
    }
    for address, service in expected.items():
        async with grpc.aio.insecure_channel(address) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
            assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_when_enabled() -> None:
    service = CatalogService(_BrokenBackend(), Registry.load())  # type: ignore[arg-type]
    running = await start_server(
        "catalog-test", lambda server: catalog_pb2_grpc.add_CatalogServicer_to_server(service, server),
        ["geomesh.v1.Catalog"], identity="catalog", mesh=MeshSettings(reflection=True),
    )
    try:
        async with open_channel(running.address, "catalog") as channel:
            stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            names = {s.name async for r in stream for s in r.list_services_response.service}
            assert {"geomesh.v1.Catalog", "grpc.health.v1.Health"} <= names
    finally:
        await running.stop(grace=0)


class _BrokenBackend:
    async def get_collection(self, collection: str) -> None:
        raise RuntimeError("secret internal detail")

    async def close(self) -> None:
        return None


async def test_an_unexpected_error_is_internal_without_details() -> None:
    service = CatalogService(_BrokenBackend(), Registry.load())  # type: ignore[arg-type]
    running = await start_server(
        "catalog-test", lambda server: catalog_pb2_grpc.add_CatalogServicer_to_server(service, server),
        ["geomesh.v1.Catalog"], identity="catalog",
    )
    try:
        async with open_channel(running.address, "catalog") as channel:
            with pytest.raises(grpc.RpcError) as caught:
                await catalog_pb2_grpc.CatalogStub(channel).GetCollection(catalog_pb2.GetCollectionRequest(collection="x"))
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        details = caught.value.details() or ""
        assert "secret" not in details and "RuntimeError" not in details and "see the service's log" in details
    finally:
        await running.stop(grace=0)
