"""Every failure at the edge becomes Harmony's JSON error `{"code", "description"}` with its status."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from geomesh.errors import (
    GeomeshError,
    NotFoundError,
    RequestValidationError,
    UnauthorizedError,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The status a request is counted with when its client went away before the answer was sent
# (nginx's "client closed request"); no client ever sees it.
CLIENT_CLOSED_REQUEST = 499


def client_gone(request: web.Request) -> bool:
    """Whether the client's connection is closed (or closing), so nothing more can reach it."""
    transport = request.transport
    return transport is None or transport.is_closing()


# The WWW-Authenticate value of a 401: the two schemes a client may use.
CHALLENGE = 'Bearer realm="geomesh", Basic realm="geomesh"'


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
    except ConnectionError:  # aiohttp's writes raise ConnectionResetError, or ConnectionError while draining
        if not client_gone(request):
            return _unexpected(request)
        # Not an error of ours: a client that disconnects, mid-download or before the answer.
        log.info("the client left before %s %s was answered", request.method, request.path)
        return web.Response(status=CLIENT_CLOSED_REQUEST)
    except Exception:
        return _unexpected(request)


def _unexpected(request: web.Request) -> web.Response:
    """The exception being handled, logged with its traceback, as a 500 that tells nothing of it."""
    log.exception("unexpected error answering %s %s", request.method, request.path_qs)
    return web.json_response(
        {"code": "harmony.ServerError", "description": "Error: Internal server error"}, status=500
    )
