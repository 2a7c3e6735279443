"""Harmony's jobs API: list, status, actions, bulk status, labels, and the staged results."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from edge.api.common import root_url
from edge.api.downloads import relay_file, requested_offset
from edge.auth import caller
from edge.clients import CLIENTS
from edge.errors import malformed_body
from edge.job_json import job_json, paging_links
from edge.rangeset import parse_integer
from geomesh.errors import NotFoundError, RequestValidationError
from geomesh.nesting import MAX_DEPTH, json_depth
from geomesh.rpc import rpc_errors
from geomesh.v1 import scheduler_pb2

routes = web.RouteTableDef()

DEFAULT_LINK_LIMIT = 2000
DEFAULT_JOB_LIMIT = 10
MAX_LIMIT = 10000
MAX_STATUS_IDS = 2000
_ACTIONS = {
    "cancel": scheduler_pb2.ControlJobRequest.CANCEL,
    "pause": scheduler_pb2.ControlJobRequest.PAUSE,
    "resume": scheduler_pb2.ControlJobRequest.RESUME,
    "skip-preview": scheduler_pb2.ControlJobRequest.SKIP_PREVIEW,
}


@routes.get("/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    page, limit = _paging(request, DEFAULT_JOB_LIMIT)
    labels = _listed(request.query.getall("label", []))
    with rpc_errors():
        response = await request.app[CLIENTS].scheduler.ListJobs(
            scheduler_pb2.ListJobsRequest(caller=caller(request).to_proto(), page=page, limit=limit, labels=labels)
        )
    root = root_url(request)
    query = {"label": labels} if labels else {}
    body = {
        "count": response.total,
        "jobs": [job_json(job, root, listing=True) for job in response.jobs],
        "links": paging_links(f"{root}/jobs", page, limit, response.total, query=query),
    }
    return web.json_response(body, headers={"Harmony-Hits": str(response.total)})


@routes.post("/jobs/status")
async def job_statuses(request: web.Request) -> web.Response:
    body = await _json_body(request)
    ids = body.get("jobIDs") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not all(isinstance(job_id, str) for job_id in ids):
        raise RequestValidationError('The body must be JSON like {"jobIDs": ["<job id>", ...]}')
    if len(ids) > MAX_STATUS_IDS:
        raise RequestValidationError(f"At most {MAX_STATUS_IDS} jobIDs may be given at once, not {len(ids)}")
    with rpc_errors():
        response = await request.app[CLIENTS].scheduler.JobStatuses(
            scheduler_pb2.JobStatusesRequest(caller=caller(request).to_proto(), job_ids=ids)
        )
    return web.json_response(
        {
            "jobStatuses": [{"jobID": s.job_id, "status": s.status, "progress": s.progress} for s in response.statuses],
            "notFoundJobIDs": list(response.not_found),
        }
    )


@routes.get("/jobs/{jobID}")
async def get_job(request: web.Request) -> web.Response:
    link_type = requested_link_type(request)
    page, limit = _paging(request, DEFAULT_LINK_LIMIT)
    with rpc_errors():
        job = await request.app[CLIENTS].scheduler.GetJob(
            scheduler_pb2.GetJobRequest(
                caller=caller(request).to_proto(), job_id=request.match_info["jobID"], page=page, limit=limit,
                link_type=link_type,
            )
        )
    return web.json_response(job_json(job, root_url(request), page=page, limit=limit))


@routes.route("GET", "/jobs/{jobID}/{action:cancel|pause|resume|skip-preview}")
@routes.route("POST", "/jobs/{jobID}/{action:cancel|pause|resume|skip-preview}")
async def control_job(request: web.Request) -> web.Response:
    requested_link_type(request)
    job_id = request.match_info["jobID"]
    with rpc_errors():
        await request.app[CLIENTS].scheduler.ControlJob(
            scheduler_pb2.ControlJobRequest(
                caller=caller(request).to_proto(), job_id=job_id, action=_ACTIONS[request.match_info["action"]]
            )
        )
    raise web.HTTPFound(f"{root_url(request)}/jobs/{job_id}")


@routes.put("/labels")
async def add_labels(request: web.Request) -> web.Response:
    job_ids, labels = await _label_request(request)
    response = await _update_labels(request, job_ids, labels, remove=False)
    return web.json_response({"jobID": list(response.job_ids), "label": list(response.labels)}, status=201)


@routes.delete("/labels")
async def remove_labels(request: web.Request) -> web.Response:
    job_ids, labels = await _label_request(request)
    await _update_labels(request, job_ids, labels, remove=True)
    return web.Response(status=204)


@routes.get("/service-results/{jobID}/{itemID}/{fileName}")
async def service_result(request: web.Request) -> web.StreamResponse:
    """A staged output: redirected to the object store when clients can reach it, else streamed."""
    job_id = request.match_info["jobID"]
    item_id = request.match_info["itemID"]
    path = f"{item_id}/{request.match_info['fileName']}"
    # Work item ids are int64s: anything else ("²" is a digit to str.isdigit, 5000 digits overflow) names no output.
    if not (item_id.isascii() and item_id.isdigit() and len(item_id) <= 18):
        raise NotFoundError(f"Job {job_id} has no output /service-results/{job_id}/{path[:100]}")
    offset = requested_offset(request)
    call = request.app[CLIENTS].scheduler.FetchResult(
        scheduler_pb2.FetchResultRequest(
            caller=caller(request).to_proto(), job_id=job_id, path=path, offset=offset, allow_redirect=True
        )
    )
    messages = aiter(call)
    try:
        with rpc_errors():
            header = (await anext(messages)).header
        if header.redirect_url:
            # As Harmony: a temporary redirect to a presigned URL, for this user only.
            return web.Response(status=307, headers={"Location": header.redirect_url, "Cache-Control": "private"})
        return await relay_file(
            request,
            file_name=header.file_name,
            media_type=header.media_type,
            size=header.size_bytes,
            offset=offset,
            chunks=(message.data async for message in messages),
        )
    finally:
        call.cancel()


async def _update_labels(
    request: web.Request, job_ids: list[str], labels: list[str], *, remove: bool
) -> scheduler_pb2.UpdateLabelsResponse:
    with rpc_errors():
        return await request.app[CLIENTS].scheduler.UpdateLabels(
            scheduler_pb2.UpdateLabelsRequest(caller=caller(request).to_proto(), job_ids=job_ids, labels=labels, remove=remove)
        )


async def _label_request(request: web.Request) -> tuple[list[str], list[str]]:
    """jobID and label from the query string, a JSON body, or a form body; repeats and commas both work."""
    job_ids = request.query.getall("jobID", [])
    labels = request.query.getall("label", [])
    if request.can_read_body:
        if request.content_type == "application/json":
            body = await _json_body(request)
            if not isinstance(body, dict):
                raise RequestValidationError('The body must be JSON like {"jobID": [...], "label": [...]}')
            job_ids += _strings(body.get("jobID", []), "jobID")
            labels += _strings(body.get("label", []), "label")
        else:
            with malformed_body():
                form = await request.post()
            job_ids += [v for v in form.getall("jobID", []) if isinstance(v, str)]
            labels += [v for v in form.getall("label", []) if isinstance(v, str)]
    job_ids, labels = _listed(job_ids), _listed(labels)
    if not job_ids or not labels:
        raise RequestValidationError("Give jobID and label (query string, form or JSON body), one or more of each")
    return job_ids, labels


def _strings(value: Any, name: str) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise RequestValidationError(f'"{name}" must be a string or a list of strings')
    return values


def _listed(values: list[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


async def _json_body(request: web.Request) -> Any:
    """The body as JSON, refusing what could not go on to the scheduler: JSON may escape lone
    surrogates ("\\ud800"), which are not Unicode and so no protobuf string (a 500 before); and
    JSON nested deeper than any request of these needs, before a recursive parser sees it."""
    try:
        text = await request.text()
        depth = json_depth(text)
        if depth > MAX_DEPTH:
            raise RequestValidationError(
                f"The request body nests arrays and objects {depth} levels deep, beyond the limit of {MAX_DEPTH}: "
                'send JSON like {"jobIDs": ["<job id>", ...]} or {"jobID": [...], "label": [...]}'
            )
        body = json.loads(text, parse_int=float)  # no field is a number: a 5000-digit one is no error of int()'s
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (ValueError, LookupError) as error:  # bad JSON or bytes, unknown charset
        raise RequestValidationError(f"The request body is not valid JSON: {error}") from None
    return body


def _paging(request: web.Request, default_limit: int) -> tuple[int, int]:
    page, limit = request.query.get("page"), request.query.get("limit")
    return (
        parse_integer("page", page, 1, 2**31 - 1) if page is not None else 1,
        parse_integer("limit", limit, 1, MAX_LIMIT) if limit is not None else default_limit,
    )


LINK_TYPES = ("http", "https", "s3")


def requested_link_type(request: web.Request) -> str:
    """Harmony's linktype: http and https links (the default) or s3:// URLs of staged outputs."""
    link_type = request.query.get("linktype", "https").lower()
    if link_type not in LINK_TYPES:
        raise RequestValidationError(f"Invalid linkType '{link_type}' must be http, https, or s3")
    return link_type
