"""Helpers the API modules share: URLs, the collection in the path, catalog lookups."""

from __future__ import annotations

from aiohttp import web

from edge.clients import CLIENTS
from geomesh.rpc import rpc_errors
from geomesh.v1 import catalog_pb2, types_pb2

COVERAGES = "ogc-api-coverages/1.0.0"


def root_url(request: web.Request) -> str:
    return str(request.url.origin())


def coverages_url(request: web.Request, collection_id: str) -> str:
    return f"{root_url(request)}/{collection_id}/{COVERAGES}"


async def get_collection(request: web.Request) -> types_pb2.Collection:
    """The collection named in the path (concept id or short name); 404 when the catalog has none."""
    with rpc_errors():
        return await request.app[CLIENTS].catalog.GetCollection(
            catalog_pb2.GetCollectionRequest(collection=request.match_info["collectionId"])
        )


async def list_variables(request: web.Request, collection_id: str) -> list[types_pb2.Variable]:
    with rpc_errors():
        response = await request.app[CLIENTS].catalog.ListVariables(
            catalog_pb2.ListVariablesRequest(collection_id=collection_id)
        )
    return list(response.variables)
