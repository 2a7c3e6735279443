"""What the edge tells its operators about each request: its id (the client's `X-Request-Id` when it
sends a usable one, passed on to every service behind), a span continuing the client's trace,
Prometheus metrics, and one access log line."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from edge.auth import known_user
from edge.errors import CLIENT_CLOSED_REQUEST, client_gone
from geomesh import logs, tracing
from geomesh.metrics import HTTP_HANDLED, HTTP_SECONDS

REQUEST_ID = web.RequestKey("request_id", str)
# An id a client may choose: short, and nothing that could break a log line or a header.
_USABLE_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def request_id(request: web.Request) -> str:
    return request[REQUEST_ID]


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource else "unmatched"


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("X-Request-Id", "")
    request[REQUEST_ID] = given if _USABLE_ID.fullmatch(given) else str(uuid.uuid4())
    logs.request_id.set(request[REQUEST_ID])
    route = _route(request)
    span = tracing.server_span(
        f"{request.method} {route}", request.headers,
        **{"http.request.method": request.method, "http.route": route, "url.path": request.path, "geomesh.request_id": request[REQUEST_ID]},
    )
    started = time.perf_counter()
    status = 500
    with tracing.current(span):
        try:
            response = await handler(request)
            # An answer not yet sent to a client already gone is counted as the client's doing (499).
            status = CLIENT_CLOSED_REQUEST if not response.prepared and client_gone(request) else response.status
            return response
        except web.HTTPException as error:  # redirects (303 to a job, 302 after an action) are raised
            status = error.status
            raise
        except asyncio.CancelledError:  # the handler was cancelled: its client left, or the edge is stopping
            status = CLIENT_CLOSED_REQUEST
            raise
        finally:
            HTTP_HANDLED.labels(route, request.method, str(status)).inc()
            HTTP_SECONDS.labels(route, request.method).observe(time.perf_counter() - started)
            span.set_attribute("http.response.status_code", status)
            if status >= 500 and status != CLIENT_CLOSED_REQUEST:
                tracing.failed(span, str(status))


async def stamp_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer names its request id, errors and redirects included."""
    if REQUEST_ID in request:
        response.headers.setdefault("X-Request-Id", request[REQUEST_ID])


class AccessLogger(AbstractAccessLogger):
    """One line per request answered: who asked what, the status, bytes sent and time taken."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        user = known_user(request) if isinstance(request, web.Request) else None
        self.logger.info(
            '%s "%s %s" %d %d B %.1f ms "%s"',
            request.remote, request.method, request.path_qs, response.status, response.body_length, time * 1000,
            request.headers.get("User-Agent", "-"),
            extra={
                "request_id": request.get(REQUEST_ID), "user": user,
                "method": request.method, "path": request.path, "status": response.status,
                "bytes": response.body_length, "duration_ms": round(time * 1000, 1), "remote": request.remote,
            },
        )


ACCESS_LOG = logging.getLogger("geomesh.access")
