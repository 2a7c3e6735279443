"""A finished job's outputs as a STAC catalog: /stac/{jobID}/ and one item per output, /stac/{jobID}/{index}."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from edge.api.common import root_url
from edge.api.jobs import requested_link_type
from edge.auth import caller
from edge.clients import CLIENTS
from edge.job_json import COMPLETE, absolute, timestamp
from geomesh.errors import ConflictError, NotFoundError
from geomesh.rpc import rpc_errors
from geomesh.v1 import scheduler_pb2

routes = web.RouteTableDef()

STAC_VERSION = "1.0.0"
MAX_ITEMS = 10000


@routes.get("/stac/{jobID}/")
async def catalog(request: web.Request) -> web.Response:
    job = await _finished_job(request)
    base = f"{root_url(request)}/stac/{job.job_id}/"
    links = [
        {"rel": "root", "href": base, "type": "application/json", "title": "root"},
        {"rel": "self", "href": base, "type": "application/json"},
    ]
    links += [{"rel": "item", "href": f"{base}{index}", "type": "application/json"} for index in range(len(job.links))]
    return web.json_response(
        {
            "stac_version": STAC_VERSION,
            "type": "Catalog",
            "id": job.job_id,
            "title": f"geomesh outputs of job {job.job_id}",
            "description": f"The outputs of the request {job.request}",
            "links": links,
        }
    )


@routes.get("/stac/{jobID}/{index:[0-9]+}")
async def item(request: web.Request) -> web.Response:
    job = await _finished_job(request)
    text = request.match_info["index"]
    # By length first: int() refuses more than 4300 digits (a 500 before); no job has 10**18 outputs.
    index = int(text) if len(text) <= 18 else len(job.links)
    if index >= len(job.links):
        raise NotFoundError(f"Job {job.job_id} has {len(job.links)} outputs: there is no STAC item {text[:20]}")
    link = job.links[index]
    base = f"{root_url(request)}/stac/{job.job_id}/"
    body: dict[str, Any] = {
        "stac_version": STAC_VERSION,
        "stac_extensions": [],
        "type": "Feature",
        "id": f"{job.job_id}_{index}",
        "geometry": None,
        "properties": _times(link, job),
        "links": [
            {"rel": "self", "href": f"{base}{index}", "type": "application/json"},
            {"rel": "root", "href": base, "type": "application/json"},
            {"rel": "parent", "href": base, "type": "application/json"},
        ],
        "assets": {
            "data": {"href": absolute(root_url(request), link.href), "title": link.title, "type": link.type, "roles": ["data"]}
        },
    }
    if link.HasField("bbox"):
        west, south, east, north = link.bbox.west, link.bbox.south, link.bbox.east, link.bbox.north
        body["bbox"] = [west, south, east, north]
        body["geometry"] = {
            "type": "Polygon",
            "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]],
        }
    return web.json_response(body)


def _times(link: scheduler_pb2.JobLink, job: scheduler_pb2.Job) -> dict[str, str | None]:
    temporal = link.temporal
    if link.HasField("temporal") and temporal.HasField("start") and temporal.HasField("end"):
        return {"datetime": None, "start_datetime": timestamp(temporal.start), "end_datetime": timestamp(temporal.end)}
    if link.HasField("temporal") and temporal.HasField("start"):
        return {"datetime": timestamp(temporal.start)}
    # STAC needs a time: an output without one is stamped with the job's creation.
    return {"datetime": timestamp(job.created_at)}


async def _finished_job(request: web.Request) -> scheduler_pb2.Job:
    link_type = requested_link_type(request)
    with rpc_errors():
        job = await request.app[CLIENTS].scheduler.GetJob(
            scheduler_pb2.GetJobRequest(
                caller=caller(request).to_proto(), job_id=request.match_info["jobID"], limit=MAX_ITEMS,
                link_type=link_type,
            )
        )
    if job.status not in COMPLETE:
        raise ConflictError(
            f"Job {job.job_id} is {job.status}: its STAC catalog is available once it is successful or complete_with_errors"
        )
    return job
