"""Every failure at the edge becomes Harmony's JSON error `{"code", "description"}` with its status."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from edge.auth import CHALLENGE
from geomesh.errors import (
    GeomeshError,
    NotFoundError,
    RequestValidationError,
    UnauthorizedError,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(error: GeomeshError) -> web.Response:
    response = web.json_response(error.to_json(), status=error.http_status)
    if isinstance(error, UnauthorizedError):
        response.headers["WWW-Authenticate"] = CHALLENGE
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return response


@contextmanager
def malformed_body() -> Iterator[None]:
    """Reading a form body: aiohttp's parsers report a broken one (no multipart boundary, bad part
    headers, an unknown charset or transfer encoding, undecodable text) with plain exceptions, which
    are the client's fault, so a 400 rather than a 500."""
    try:
        yield
    except HttpProcessingError as error:
        raise RequestValidationError(f"The request body could not be read: {error.message.strip()}") from None
    except (ValueError, LookupError, RuntimeError) as error:
        raise RequestValidationError(f"The request body could not be read: {error}") from None


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GeomeshError as error:
        return error_response(error)
    except web.HTTPNotFound:
        return error_response(NotFoundError(f"The requested page {request.path} was not found"))
    except web.HTTPMethodNotAllowed as error:
        return web.json_response(
            RequestValidationError(f"{request.method} is not allowed on {request.path}; use {', '.join(sorted(error.allowed_methods))}").to_json(),
            status=405,
            headers={"Allow": ",".join(sorted(error.allowed_methods))},
        )
    except web.HTTPException as error:
        if error.status >= 400:
            return web.json_response(
                {"code": "harmony.HttpError", "description": f"Error: {error.reason}"}, status=error.status
            )
        raise
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path_qs)
        return web.json_response(
            {"code": "harmony.ServerError", "description": "Error: Internal server error"}, status=500
        )
