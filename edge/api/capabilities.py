"""Harmony's /capabilities: what can be done with one collection (its variables, services and operations)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from edge.auth import caller
from edge.clients import CLIENTS
from geomesh.errors import RequestValidationError
from geomesh.rpc import rpc_errors
from geomesh.v1 import catalog_pb2

routes = web.RouteTableDef()

VERSIONS = ("1", "2")
DEFAULT_VERSION = "2"
# Set by the catalog (catalog/service.py) when it reads CMR: where CMR resolves concept ids.
_PARAMETERS = {"collectionid": "collectionId", "shortname": "shortName", "version": "version"}


def _parameters(request: web.Request) -> dict[str, str]:
    """The query, names matched case-insensitively as Harmony does (harmony-py sends `collectionid`)."""
    found: dict[str, str] = {}
    for key, value in request.query.items():
        name = _PARAMETERS.get(key.lower())
        if name is None:
            continue
        if name in found:
            raise RequestValidationError(f"Only one {name} may be given")
        found[name] = value
    return found


def _subsetting(capabilities: catalog_pb2.ServiceCapabilities) -> dict[str, bool]:
    return {
        "bbox": capabilities.bbox_subset,
        "variable": capabilities.variable_subset,
        "multiple_variable": capabilities.multiple_variable,
        "shape": capabilities.shape_subset,
        "temporal": capabilities.temporal_subset,
        "dimension": capabilities.dimension_subset,
    }


def _service(service: catalog_pb2.Service) -> dict[str, Any]:
    # Registry services are not CMR concepts, so they have no href.
    capabilities = service.capabilities
    return {
        "name": service.name,
        "capabilities": {
            "subsetting": _subsetting(capabilities),
            "output_formats": list(capabilities.output_formats),
            "reprojection": capabilities.reprojection,
            "concatenation": capabilities.concatenation,
        },
    }


def capabilities_json(answer: catalog_pb2.CollectionCapabilities, version: str, concepts_url: str | None) -> dict[str, Any]:
    combined = answer.combined
    body: dict[str, Any] = {
        "conceptId": answer.collection.id,
        "shortName": answer.collection.short_name,
        "variableSubset": combined.variable_subset,
        "bboxSubset": combined.bbox_subset,
        "shapeSubset": combined.shape_subset,
        "temporalSubset": combined.temporal_subset,
        "concatenate": combined.concatenation,
        "reproject": combined.reprojection,
        "outputFormats": list(combined.output_formats),
        "services": [_service(service) for service in answer.services],
        "variables": [
            {"name": v.name, **({"href": f"{concepts_url}/{v.id}"} if concepts_url else {})} for v in answer.variables
        ],
        "capabilitiesVersion": version,
    }
    if version == "1":
        del body["temporalSubset"]  # version 2 added it
    return body


@routes.get("/capabilities")
async def capabilities(request: web.Request) -> web.Response:
    caller(request)
    params = _parameters(request)
    version = params.get("version", DEFAULT_VERSION)
    if version not in VERSIONS:
        raise RequestValidationError(f"Invalid API version {version}, supported versions: {', '.join(VERSIONS)}")
    if "collectionId" in params and "shortName" in params:
        raise RequestValidationError("Only one of collectionId or shortName may be given, not both")
    collection = params.get("collectionId") or params.get("shortName")
    if not collection:
        raise RequestValidationError("Must specify either collectionId or shortName")
    with rpc_errors():
        answer = await request.app[CLIENTS].catalog.Capabilities(catalog_pb2.GetCollectionRequest(collection=collection))
    return web.json_response(capabilities_json(answer, version, answer.concepts_url or None))
