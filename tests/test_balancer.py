"""Addresses that scale: calls spread over every entry of an address setting and fail over when one dies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import grpc
import pytest

from geomesh.balancer import BalancedStub, targets
from geomesh.errors import NotFoundError
from geomesh.identity import MeshSettings
from geomesh.rpc import RunningServer, rpc_errors, start_server
from geomesh.v1 import catalog_pb2, catalog_pb2_grpc, types_pb2

EDGE = MeshSettings().credentials("edge")


class _NamedCatalog(catalog_pb2_grpc.CatalogServicer):
    """Answers with its own name, so a test sees which server took a call."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def GetCollection(self, request: catalog_pb2.GetCollectionRequest, context: grpc.aio.ServicerContext) -> types_pb2.Collection:
        if request.collection == "missing":
            raise NotFoundError("no such collection")
        return types_pb2.Collection(id=self.name)

    async def SearchGranules(
        self, request: catalog_pb2.SearchGranulesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[catalog_pb2.SearchGranulesResponse]:
        yield catalog_pb2.SearchGranulesResponse(hits=2)
        for index in range(2):
            yield catalog_pb2.SearchGranulesResponse(granule=types_pb2.Granule(id=f"{self.name}-{index}"))


async def _serve(name: str) -> RunningServer:
    return await start_server(
        name, lambda server: catalog_pb2_grpc.add_CatalogServicer_to_server(_NamedCatalog(name), server), ["geomesh.v1.Catalog"], identity="catalog"
    )


def test_address_settings_become_grpc_targets() -> None:
    assert targets("127.0.0.1:1") == ["dns:///127.0.0.1:1"]
    assert targets(" a:1, dns:///b:2 ,ipv4:10.0.0.1:3,") == ["dns:///a:1", "dns:///b:2", "ipv4:10.0.0.1:3"]
    assert targets(["a:1,b:2", "c:3"]) == ["dns:///a:1", "dns:///b:2", "dns:///c:3"]
    with pytest.raises(ValueError, match="no gRPC address"):
        targets(" , ")


async def test_calls_spread_over_every_entry_and_fail_over_when_one_dies() -> None:
    first, second = await _serve("first"), await _serve("second")
    stub = BalancedStub(catalog_pb2_grpc.CatalogStub, f"{first.address},{second.address}", EDGE, "catalog")
    catalog = cast(catalog_pb2_grpc.CatalogStub, stub)
    try:
        answered = [(await catalog.GetCollection(catalog_pb2.GetCollectionRequest(collection="x"))).id for _ in range(6)]
        assert answered.count("first") == answered.count("second") == 3

        streamed = [
            response.granule.id
            async for response in catalog.SearchGranules(catalog_pb2.SearchGranulesRequest())
            if response.WhichOneof("item") == "granule"
        ]
        assert streamed in (["first-0", "first-1"], ["second-0", "second-1"])

        # An answer the server gave (its error) is not tried elsewhere.
        with pytest.raises(NotFoundError), rpc_errors():
            await catalog.GetCollection(catalog_pb2.GetCollectionRequest(collection="missing"))

        await first.stop(grace=0)
        after = [(await catalog.GetCollection(catalog_pb2.GetCollectionRequest(collection="x"))).id for _ in range(4)]
        assert after == ["second"] * 4
        streamed_after = [r async for r in catalog.SearchGranules(catalog_pb2.SearchGranulesRequest())]
        assert [r.hits for r in streamed_after[:1]] == [2] and len(streamed_after) == 3
    finally:
        await stub.close()
        await first.stop(grace=0)
        await second.stop(grace=0)


async def test_every_entry_down_is_unavailable_naming_no_internals() -> None:
    server = await _serve("gone")
    address = server.address
    await server.stop(grace=0)
    stub = BalancedStub(catalog_pb2_grpc.CatalogStub, address, EDGE, "catalog")
    try:
        with pytest.raises(grpc.RpcError) as caught:
            await cast(catalog_pb2_grpc.CatalogStub, stub).GetCollection(catalog_pb2.GetCollectionRequest(collection="x"))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await stub.close()
