"""/collections: in Harmony's Coverages API, OGC "collections" are the CMR collection's variables."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from edge.api.common import COVERAGES, coverages_url, get_collection, list_variables
from geomesh.errors import NotFoundError
from geomesh.v1 import types_pb2

routes = web.RouteTableDef()

_GREGORIAN = "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"
_COVERAGE_REL = "http://www.opengis.net/def/rel/ogc/1.0/coverage"


def _label(collection: types_pb2.Collection) -> str:
    return f"{collection.short_name} v{collection.version}"


def _time(value: Any, present: bool) -> str | None:
    return value.ToDatetime().strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.nanos // 1_000_000:03d}Z" if present else None


def _describe(request: web.Request, collection: types_pb2.Collection, variable: types_pb2.Variable | None) -> dict[str, Any]:
    name = variable.name if variable else "all"
    description = (variable.long_name or variable.description) if variable else "All variables"
    temporal = collection.temporal
    return {
        "id": f"{collection.id}/{variable.id if variable else 'all'}",
        "title": f"{name} {_label(collection)}",
        "description": f"{description} {_label(collection)} ({collection.provider})",
        "extent": {
            "temporal": {
                "interval": [_time(temporal.start, temporal.HasField("start")), _time(temporal.end, temporal.HasField("end"))],
                "trs": _GREGORIAN,
            }
        },
        "itemType": "Variable",
        "links": [
            {
                "href": f"{coverages_url(request, request.match_info['collectionId'])}/collections/{name}/coverage/rangeset",
                "rel": _COVERAGE_REL,
                "title": f"Perform rangeset request for {name}",
            }
        ],
    }


@routes.get("/{collectionId}/" + COVERAGES + "/collections")
@routes.get("/{collectionId}/" + COVERAGES + "/collections/")
async def list_collections(request: web.Request) -> web.Response:
    collection = await get_collection(request)
    variables = sorted(await list_variables(request, collection.id), key=lambda v: v.name)
    base = coverages_url(request, request.match_info["collectionId"])
    return web.json_response(
        {
            "collections": [_describe(request, collection, None)] + [_describe(request, collection, v) for v in variables],
            "links": [
                {"href": base, "rel": "root", "title": f"OGC coverages API root for {_label(collection)}",
                 "type": "application/json"},
                {"href": f"{base}/collections", "rel": "self", "title": f"Collections listing for {_label(collection)}",
                 "type": "application/json"},
            ],
        }
    )


@routes.get("/{collectionId}/" + COVERAGES + "/collections/{variableId:.+?}")
async def describe_collection(request: web.Request) -> web.Response:
    """One variable by name, concept id, or the `C.../V...` id the listing gives; `all` for every variable."""
    collection = await get_collection(request)
    wanted = request.match_info["variableId"].rstrip("/").removeprefix(f"{collection.id}/")
    if wanted == "all":
        return web.json_response(_describe(request, collection, None))
    for variable in await list_variables(request, collection.id):
        if wanted in (variable.name, variable.id):
            return web.json_response(_describe(request, collection, variable))
    raise NotFoundError(f"{wanted} is not a variable of {collection.id}; see {coverages_url(request, request.match_info['collectionId'])}/collections")
