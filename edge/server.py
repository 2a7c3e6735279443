"""The edge's HTTP server, hardened: bounded connections, slow clients cut off, quiet at the fd limit.

aiohttp answers requests; what it leaves open is connection hygiene, done here once:
- at most `max_connections` at once (more are answered 503 and closed at once, before a byte of
  their request is read), so the edge cannot run out of file descriptors (its limit is raised to
  the hard one at start);
- a connection must send its request's headers within `header_timeout_seconds` and its body within
  `body_timeout_seconds` (the body_deadline middleware), and an idle kept-alive
  one is closed after `keepalive_timeout_seconds` (aiohttp's own timer, which also ends a later
  request that stalls in its headers);
- a handler is cancelled when its client goes away, so the work behind it stops (the scheduler's
  and transformer's calls are cancelled in turn);
- a repeated event-loop error (e.g. accept() failing) is logged once a minute with a count, not
  once per failure.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from edge.clients import SETTINGS
from edge.errors import error_response
from geomesh.errors import RequestValidationError

log = logging.getLogger(__name__)

_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_QUIET_SECONDS = 60.0
MAX_LINE_BYTES = 8190  # aiohttp's limit on the request line and on each header


@dataclass
class Guard:
    max_connections: int
    header_timeout: float
    open: int = 0
    refused: int = 0


class _GuardedHandler(RequestHandler):
    """One connection: counted, refused beyond the limit, cut off if its first headers are late."""

    _guard: Guard
    _refused = False
    _headers_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self._guard
        if guard.open >= guard.max_connections:
            guard.refused += 1
            self._refused = True
            transport.write(_BUSY)  # type: ignore[attr-defined]
            transport.close()
            return
        guard.open += 1
        super().connection_made(transport)
        self._headers_deadline = self._loop.call_later(guard.header_timeout, self._headers_overdue)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._headers_deadline is not None and self._request_count > 0:  # the first request's headers came
            self._headers_deadline.cancel()
            self._headers_deadline = None

    def _headers_overdue(self) -> None:
        self._headers_deadline = None
        if self._request_count == 0:
            log.info("closing a connection that sent no complete request headers within %g s", self._guard.header_timeout)
            self.force_close()

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """A request aiohttp could not parse (a line over its limit, bad framing) gets geomesh's JSON
        error saying what to change; the server's own failures keep aiohttp's handling."""
        if status != 400 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        log.info("unparsable request from %s: %s", request.remote, exc)
        if isinstance(exc, LineTooLong):
            text = (
                f"The request line or a header is longer than {MAX_LINE_BYTES} bytes; send long parameters as a "
                "form body (POST, application/x-www-form-urlencoded) instead."
            )
        else:
            text = f"The request is not valid HTTP/1.1 ({getattr(exc, 'message', exc)})."
        response = error_response(RequestValidationError(text))
        response.force_close()
        return response

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        self._guard.open -= 1
        if self._headers_deadline is not None:
            self._headers_deadline.cancel()
        super().connection_lost(exc)


class _GuardedServer(Server):
    guard: Guard

    def __call__(self) -> RequestHandler:
        handler = _GuardedHandler(self, loop=self._loop, **self._kwargs)
        handler._guard = self.guard
        return handler


class GuardedRunner(web.AppRunner):
    """An AppRunner whose connections go through the Guard."""

    def __init__(self, app: web.Application, guard: Guard, **kwargs: Any) -> None:
        super().__init__(app, handler_cancellation=True, **kwargs)
        self.guard = guard

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _GuardedServer  # the same server, making guarded connections
        server.guard = self.guard  # type: ignore[attr-defined]
        return server


def raise_file_limit() -> int:
    """The soft limit on open files, raised to the hard one; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def quiet_repeats(loop: asyncio.AbstractEventLoop) -> None:
    """Log each distinct event-loop error at most once a minute, with how often it happened."""
    last: dict[str, tuple[float, int]] = {}

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        key = str(context.get("message")) + type(context.get("exception")).__name__
        now = time.monotonic()
        seen_at, count = last.get(key, (0.0, 0))
        if now - seen_at < _QUIET_SECONDS:
            last[key] = (seen_at, count + 1)
            return
        last[key] = (now, 0)
        if count:
            context = {**context, "message": f"{context.get('message')} (and {count} more like it in the last minute)"}
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


@web.middleware
async def body_deadline(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """A request's body must have arrived within body_timeout_seconds of its headers, or its
    connection is closed (a client trickling a body would hold a handler and memory for ever)."""
    if not request.body_exists:
        return await handler(request)
    timeout = request.app[SETTINGS].body_timeout_seconds
    timer = asyncio.get_running_loop().call_later(timeout, _body_overdue, request, timeout)
    try:
        return await handler(request)
    finally:
        timer.cancel()


def _body_overdue(request: web.Request, timeout: float) -> None:
    if not request.content.is_eof():  # the parser has not seen the body's end
        log.info("closing a connection whose request body did not arrive within %g s", timeout)
        request.protocol.force_close()
