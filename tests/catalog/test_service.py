"""The Catalog gRPC service on the demo catalog, called as internal services call it."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest

from geomesh.errors import NotFoundError
from geomesh.model import TimeRange
from geomesh.rpc import open_channel, rpc_errors
from geomesh.v1 import catalog_pb2, catalog_pb2_grpc, request_pb2, types_pb2
from tests.conftest import HARMONY_EXAMPLE, Mesh


async def search(stub: catalog_pb2_grpc.CatalogStub, **fields: object) -> tuple[int, list[types_pb2.Granule]]:
    hits, granules = -1, []
    async for message in stub.SearchGranules(catalog_pb2.SearchGranulesRequest(collection_id=HARMONY_EXAMPLE, **fields)):
        if message.WhichOneof("item") == "hits":
            hits = message.hits
        else:
            granules.append(message.granule)
    return hits, granules


async def test_search_streams_hits_then_granules(mesh: Mesh) -> None:
    async with open_channel(mesh.catalog_address, "catalog") as channel:
        stub = catalog_pb2_grpc.CatalogStub(channel)
        hits, granules = await search(stub, limit=2)
        assert hits == 177 and len(granules) == 2
        seed_window = TimeRange(datetime(2020, 1, 16, 2, tzinfo=UTC), datetime(2020, 1, 16, 7, tzinfo=UTC)).to_proto()
        hits, granules = await search(stub, temporal=seed_window)
        assert hits == 3 and [g.name.split("_")[1] for g in granules] == ["01", "02", "03"]
        hits, granules = await search(stub, bbox=types_pb2.BBox(west=110, south=-45, east=156, north=-9),
                                      granule_names=["016_*"])
        assert hits == len(granules) > 0
        assert all(g.name.startswith("016_") for g in granules)
        assert {g.name.split("_", 3)[3] for g in granules} >= {"global", "australia"}
        assert granules[0].links[0].href.startswith("file://")


async def test_unknown_collection_is_not_found_with_our_error_kind(mesh: Mesh) -> None:
    async with open_channel(mesh.catalog_address, "catalog") as channel:
        stub = catalog_pb2_grpc.CatalogStub(channel)
        with pytest.raises(grpc.RpcError) as raw:
            await stub.GetCollection(catalog_pb2.GetCollectionRequest(collection="C404-NOPE"))
        assert raw.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(NotFoundError), rpc_errors():
            await stub.ListVariables(catalog_pb2.ListVariablesRequest(collection_id="C404-NOPE"))


async def test_match_and_capabilities(mesh: Mesh) -> None:
    async with open_channel(mesh.catalog_address, "catalog") as channel:
        stub = catalog_pb2_grpc.CatalogStub(channel)
        match = await stub.MatchService(request_pb2.DataRequest(collection="harmony_example", variables=["red_var"]))
        assert match.service.name == "harmony/gdal" and match.output_format == "image/tiff"
        assert list(match.service.addresses) == [mesh.transformer_address]
        capabilities = await stub.Capabilities(catalog_pb2.GetCollectionRequest(collection=HARMONY_EXAMPLE))
        assert capabilities.combined.bbox_subset and capabilities.combined.reprojection
        assert [v.name for v in capabilities.variables] == ["red_var", "green_var", "blue_var", "alpha_var"]
