"""The service root, each collection's OGC API - Coverages landing page, and conformance."""

from __future__ import annotations

from aiohttp import web

from edge.api.common import COVERAGES, coverages_url, get_collection, root_url

routes = web.RouteTableDef()

CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/collections",
    "http://www.opengis.net/spec/ogcapi-coverages-1/1.0/conf/core",
]


@routes.get("/")
async def service_root(request: web.Request) -> web.Response:
    root = root_url(request)
    return web.json_response(
        {
            "title": "geomesh",
            "description": (
                "Take exactly the Earth-observation data you need. Data requests: "
                f"{root}/{{collectionId}}/{COVERAGES}/collections/{{variable}}/coverage/rangeset"
            ),
            "links": [
                {"href": f"{root}/", "rel": "self", "type": "application/json", "title": "this document"},
                {"href": f"{root}/metrics", "rel": "metrics", "type": "text/plain", "title": "Prometheus metrics"},
            ],
        }
    )


@routes.get("/{collectionId}/" + COVERAGES)
@routes.get("/{collectionId}/" + COVERAGES + "/")
async def landing_page(request: web.Request) -> web.Response:
    collection = await get_collection(request)
    base = coverages_url(request, request.match_info["collectionId"])
    return web.json_response(
        {
            "title": f"OGC API - Coverages for {collection.short_name} v{collection.version}",
            "links": [
                {"href": f"{base}/", "rel": "self", "title": "this document", "type": "application/json"},
                {"href": f"{base}/api", "rel": "service-desc", "title": "the API definition",
                 "type": "text/openapi+yaml;version=3.0"},
                {"href": f"{base}/api?f=json", "rel": "service-desc", "title": "the API definition (JSON)",
                 "type": "application/vnd.oai.openapi+json;version=3.0"},
                {"href": f"{base}/conformance", "rel": "conformance",
                 "title": "OGC conformance classes implemented by this API", "type": "application/json"},
                {"href": f"{base}/collections", "rel": "data", "title": "Metadata about the resource collections",
                 "type": "application/json"},
            ],
        }
    )


@routes.get("/{collectionId}/" + COVERAGES + "/conformance")
@routes.get("/{collectionId}/" + COVERAGES + "/conformance/")
async def conformance(request: web.Request) -> web.Response:
    await get_collection(request)
    return web.json_response({"conformsTo": CONFORMANCE})
