"""File downloads: granule files the embedded catalog serves (/data/...), resumable with `Range: bytes=N-`.

`relay_file` and `requested_offset` know nothing of the catalog, so any stream of file bytes
(staged job results, say) can be sent the same way.
"""

from __future__ import annotations

import logging
import mimetypes
import re
from collections.abc import AsyncIterator, Mapping
from pathlib import PurePosixPath

import grpc
from aiohttp import web

from edge import telemetry
from edge.auth import caller
from edge.clients import CLIENTS
from edge.errors import client_gone
from geomesh.errors import GeomeshError, RequestValidationError, from_rpc_error
from geomesh.rpc import REQUEST_ID_KEY
from geomesh.v1 import catalog_pb2

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

# Earth-science formats the system's mime.types usually lacks.
_MEDIA_TYPES = {
    ".h5": "application/x-hdf5",
    ".he5": "application/x-hdf5",
    ".hdf5": "application/x-hdf5",
    ".nc": "application/x-netcdf4",
    ".nc4": "application/x-netcdf4",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}
_OPEN_RANGE = re.compile(r"\s*bytes\s*=\s*([0-9]+)\s*-\s*", re.IGNORECASE)
# The largest offset the services take (protobuf int64); any larger one is past the end of every file.
MAX_OFFSET = 2**63 - 1


def media_type_of(file_name: str) -> str:
    return _MEDIA_TYPES.get(PurePosixPath(file_name).suffix.lower()) or mimetypes.guess_type(file_name)[0] or "application/octet-stream"


def requested_offset(request: web.Request) -> int:
    """N from `Range: bytes=N-` (what a resuming download sends), else 0.

    Other range forms are ignored and the whole file is sent, as RFC 9110 allows. So is a range
    sent with If-Range: our responses carry no validator it could match. An N beyond MAX_OFFSET
    becomes MAX_OFFSET, so that it is answered 416 like any other offset past the end.
    """
    match = _OPEN_RANGE.fullmatch(request.headers.get("Range", ""))
    if match is None or "If-Range" in request.headers:
        return 0
    digits = match[1].lstrip("0") or "0"
    # Checked by length first: int() refuses more than 4300 digits.
    return MAX_OFFSET if len(digits) > len(str(MAX_OFFSET)) else min(int(digits), MAX_OFFSET)


def _range_not_satisfiable(size: int) -> web.Response:
    error = RequestValidationError(f"The requested range starts past the end of the file, which has {size} bytes")
    response = web.json_response(error.to_json(), status=416)
    response.headers["Content-Range"] = f"bytes */{size}"
    return response


async def relay_file(
    request: web.Request,
    *,
    file_name: str,
    media_type: str,
    size: int,
    offset: int,
    chunks: AsyncIterator[bytes],
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Send `chunks`, the file's bytes from `offset` to its end: 200 for a whole file, 206 for a
    tail, 416 (chunks untouched) when a requested offset is at or past the end.

    Once the headers are out a failure can no longer become an error response; the connection
    is closed instead, so the client sees a short body and can resume where it stopped.
    """
    if offset > 0 and offset >= size:
        return _range_not_satisfiable(size)
    quoted = file_name.replace("\\", "\\\\").replace('"', '\\"')
    response = web.StreamResponse(
        status=206 if offset > 0 else 200,
        headers={
            **(headers or {}),
            "Content-Type": media_type,
            "Content-Length": str(size - offset),
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'attachment; filename="{quoted}"',
        },
    )
    if offset > 0:
        response.headers["Content-Range"] = f"bytes {offset}-{size - 1}/{size}"
    await response.prepare(request)
    if request.method == "HEAD":
        await response.write_eof()
        return response
    expected, sent = size - offset, 0
    try:
        async for chunk in chunks:
            sent += len(chunk)
            if sent > expected:
                raise GeomeshError(f"{file_name} has more than the {size} bytes announced")
            await response.write(chunk)
        if sent < expected:
            raise GeomeshError(f"{file_name} ended after {offset + sent} of {size} bytes")
    except Exception as error:  # noqa: BLE001 - the status is sent: all that is left is to cut the body short
        if isinstance(error, ConnectionError) and client_gone(request):
            raise  # the client left: edge.errors counts it (499), it is no failure of ours
        log.warning("download of %s stopped after %d bytes: %s", file_name, offset + sent, error)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


@routes.get("/data/{path:.+}")
async def data_file(request: web.Request) -> web.StreamResponse:
    """A file the embedded catalog serves (its granules' links are /data/granules/<collection>/<file>)."""
    caller(request)  # only to users, when users are configured (authenticated by auth.middleware)
    path = request.match_info["path"]
    offset = requested_offset(request)
    request_id = telemetry.request_id(request)
    call = request.app[CLIENTS].catalog.ReadData(
        catalog_pb2.ReadDataRequest(path=path, offset=offset),
        metadata=((REQUEST_ID_KEY, request_id),),
    )
    try:
        messages = aiter(call)  # one iterator for the whole call: grpc forbids mixing read() and async for
        try:
            first = await anext(messages)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        except StopAsyncIteration:
            raise GeomeshError(f"The catalog sent nothing for {path}") from None
        return await relay_file(
            request,
            file_name=path.rsplit("/", 1)[-1],
            media_type=media_type_of(path),
            size=first.size_bytes,
            offset=offset,
            chunks=_data(messages),
            headers={"X-Request-Id": request_id},
        )
    finally:
        call.cancel()


async def _data(messages: AsyncIterator[catalog_pb2.ReadDataResponse]) -> AsyncIterator[bytes]:
    try:
        async for message in messages:
            yield message.data
    except grpc.RpcError as error:
        raise from_rpc_error(error) from None
