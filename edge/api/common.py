"""Helpers the API modules share: URLs, the collection in the path, catalog lookups."""

from __future__ import annotations

import re

from aiohttp import web

from edge.clients import CLIENTS, SETTINGS
from geomesh.rpc import rpc_errors
from geomesh.v1 import catalog_pb2, types_pb2

COVERAGES = "ogc-api-coverages/1.0.0"


_HOST = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def root_url(request: web.Request) -> str:
    """Where clients reach this edge, for every link it writes: the configured public URL; else what a
    trusted proxy says the client asked for; else the Host the client named if it is one of the
    edge's allowed names (on the port it reached); else the address its connection reached. Never
    an arbitrary Host header, which any client sets."""
    settings = request.config_dict.get(SETTINGS)
    if settings is not None and settings.public_url:
        return settings.public_url.rstrip("/")
    scheme = "https" if request.secure else "http"
    if settings is not None and request.remote in settings.trusted_proxies:
        host = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
        forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        if _HOST.match(host) and forwarded in ("http", "https"):
            return f"{forwarded}://{host}"
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not sockname:
        return str(request.url.origin())
    address, port = sockname[0], sockname[1]
    named = request.url.host or ""
    allowed = _LOOPBACK_NAMES | frozenset(settings.allowed_hosts if settings is not None else ())
    if named.lower() in allowed and (request.url.port or 80) == port:
        host = named
    else:
        host = f"[{address}]" if ":" in address else address
    default = (scheme, port) in (("http", 80), ("https", 443))
    return f"{scheme}://{host}" + ("" if default else f":{port}")


_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def request_url(request: web.Request) -> str:
    """The URL the client called, as root_url spells the edge."""
    return root_url(request) + request.rel_url.path_qs


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
