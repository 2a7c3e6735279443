"""The rangeset: a data request by GET or POST, answered by streaming the scheduler's output."""

from __future__ import annotations

import json
import logging

import grpc
from aiohttp import BodyPartReader, web

from edge import telemetry
from edge.api.common import COVERAGES, request_url, root_url
from edge.auth import bearer_token, caller
from edge.clients import CLIENTS
from edge.errors import malformed_body
from edge.job_json import job_json
from edge.rangeset import RangesetParameters, build_request
from geomesh.errors import (
    GeomeshError,
    PayloadTooLargeError,
    RequestValidationError,
    from_rpc_error,
)
from geomesh.rpc import REQUEST_ID_KEY
from geomesh.shapes import media_type_of
from geomesh.v1 import request_pb2, scheduler_pb2, types_pb2

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

RANGESET = "/{collectionId}/" + COVERAGES + "/collections/{variable:.+}/coverage/rangeset"
SHAPE_LIMIT = 8 * 1024 * 1024


@routes.get(RANGESET)
async def rangeset_get(request: web.Request) -> web.StreamResponse:
    params = RangesetParameters.from_pairs(request.query.items())
    return await _execute(request, params, shape=None)


@routes.post(RANGESET)
async def rangeset_post(request: web.Request) -> web.StreamResponse:
    pairs = list(request.query.items())
    shape = None
    if request.content_type == "multipart/form-data":
        with malformed_body():
            async for part in await request.multipart():
                if not isinstance(part, BodyPartReader):
                    # Refused before aiohttp reads past it: it skips a nested body recursively, level by level.
                    raise RequestValidationError(
                        "The multipart/form-data body holds another multipart body: send every field and the "
                        "shapefile as parts of the one form"
                    )
                if not part.name:
                    continue
                if part.name.lower() == "shapefile":
                    shape = await _read_shape(part)
                else:
                    pairs.append((part.name, await part.text()))
    elif not request.body_exists:
        pass  # everything is in the query string
    elif request.content_type == "application/x-www-form-urlencoded":
        with malformed_body():
            form = await request.post()
        pairs.extend((key, value) for key, value in form.items() if isinstance(value, str))
    else:
        raise RequestValidationError(
            f"POST bodies of type {request.content_type} are not accepted: send application/x-www-form-urlencoded "
            "or multipart/form-data"
        )
    return await _execute(request, RangesetParameters.from_pairs(pairs), shape)


async def _read_shape(part: BodyPartReader) -> types_pb2.Shape:
    content = bytearray()
    while chunk := await part.read_chunk():
        content.extend(chunk)
        if len(content) > SHAPE_LIMIT:
            raise PayloadTooLargeError(f"The shapefile upload is larger than {SHAPE_LIMIT // (1024 * 1024)} MiB")
    # The part's Content-Type names the kind; without one (or a generic one) its file name does.
    file_name = part.filename or ""
    media_type = media_type_of(part.headers.get("Content-Type"), file_name)
    return types_pb2.Shape(content=bytes(content), media_type=media_type, file_name=file_name)


async def _execute(request: web.Request, params: RangesetParameters, shape: types_pb2.Shape | None) -> web.StreamResponse:
    data_request = build_request(params, request.match_info["collectionId"], request.match_info["variable"])
    data_request.request_id = telemetry.request_id(request)
    data_request.user = caller(request).user
    data_request.access_token = bearer_token(request)
    data_request.request_url = request_url(request)
    data_request.output.accepted_formats.extend(_accepted(request))
    if shape is not None:
        data_request.shape.CopyFrom(shape)
    return await _relay(request, data_request)


def _accepted(request: web.Request) -> list[str]:
    """Media types from the Accept header, most preferred first (q=0 dropped)."""
    ranked = []
    for index, item in enumerate(request.headers.get("Accept", "").split(",")):
        media_type, *options = (piece.strip() for piece in item.split(";"))
        quality = 1.0
        for option in options:
            if option.startswith("q="):
                try:
                    quality = float(option[2:])
                except ValueError:
                    quality = 0.0
        if media_type and quality > 0:
            ranked.append((-quality, index, media_type))
    return [media_type for _, _, media_type in sorted(ranked)]


async def _relay(request: web.Request, data_request: request_pb2.DataRequest) -> web.StreamResponse:
    call = request.app[CLIENTS].scheduler.Execute(
        data_request, metadata=((REQUEST_ID_KEY, data_request.request_id),)
    )
    return await relay(request, call, data_request.request_id)


async def relay(
    request: web.Request, call: grpc.aio.UnaryStreamCall, request_id: str
) -> web.StreamResponse:
    """Write the scheduler's Execute stream to the client as it arrives: headers on the first message."""
    response: web.StreamResponse | None = None
    job: scheduler_pb2.Job | None = None
    try:
        async for message in call:
            kind = message.WhichOneof("item")
            if kind == "job":  # the stream ends right after it: read to its end, so the call ends OK
                job = message.job
            elif kind == "header":
                header = message.header
                response = web.StreamResponse(
                    headers={
                        "Content-Type": header.media_type,
                        "Content-Disposition": f'inline; filename="{header.file_name}"',
                        "X-Request-Id": request_id,
                    }
                )
                response.enable_chunked_encoding()
                await response.prepare(request)
            elif kind == "data" and response is not None:
                await response.write(message.data)
    except grpc.RpcError as rpc_error:
        error = from_rpc_error(rpc_error)
        if response is None:
            raise error from None
        _abort(request, request_id, error)
        return response
    finally:
        call.cancel()
    if job is not None:
        return _job_response(request, job)
    if response is None:
        raise GeomeshError("The scheduler ended the request without a result")
    await response.write_eof()
    return response


def _job_response(request: web.Request, job: scheduler_pb2.Job) -> web.Response:
    """Harmony's answers: a GET is sent on to the job's page; a POST (harmony-py) and a
    direct-download request (already complete) get the job itself."""
    body = job_json(job, root_url(request))
    if request.method == "GET" and job.status != "successful":
        raise web.HTTPSeeOther(f"{root_url(request)}/jobs/{job.job_id}", text=json.dumps(body), content_type="application/json")
    return web.json_response(body)


def _abort(request: web.Request, request_id: str, error: GeomeshError) -> None:
    # Headers are gone: the only honest signal left is to cut the chunked body short.
    log.warning("request %s failed mid-stream: %s", request_id, error.message)
    if request.transport is not None:
        request.transport.close()
