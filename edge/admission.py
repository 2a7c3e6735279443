"""Admission: at most `max_requests` requests answered at once, `max_requests_per_user` of them a
user's (a client address's, without users); beyond, a 503 or a 429 at once, with Retry-After,
rather than a queue that makes every request slow. A streamed answer counts until it is sent.

Behind the edge the transformers bound their own queues (a 429 from them reaches the client the
same way), and light workers keep cheap requests from waiting behind expensive ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from edge.auth import AUTHENTICATOR, CALLER, RENDERERS
from edge.clients import SETTINGS
from edge.errors import error_response
from geomesh.errors import GeomeshError, ServiceUnavailableError, TooManyRequestsError
from geomesh.metrics import HTTP_IN_FLIGHT

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Probes and scrapes are answered even when the edge is full: a full edge is alive and ready.
_UNCOUNTED = frozenset({"/metrics", "/health", "/readiness"})


@dataclass
class InFlight:
    total: int = 0
    by_client: Counter[str] = field(default_factory=Counter)


IN_FLIGHT = web.AppKey("in_flight", InFlight)


def _client(request: web.Request) -> str:
    """Who a request counts against: its user (authenticated already: edge.auth.middleware runs
    first), else its client's address (no users configured, or a public route)."""
    known = request.get(CALLER)
    if request.app[AUTHENTICATOR].configured and known is not None:
        return "user:" + known.user
    return "address:" + (request.remote or "")


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in _UNCOUNTED:
        return await handler(request)
    settings, in_flight = request.app[SETTINGS], request.app[IN_FLIGHT]
    client = _client(request)
    refusal: GeomeshError | None = None
    if in_flight.total >= settings.max_requests:
        refusal = ServiceUnavailableError(
            f"geomesh is answering {in_flight.total} requests, as many as it takes at once; try again shortly.",
            retry_after=1,
        )
    elif in_flight.by_client[client] >= settings.max_requests_per_user:
        refusal = TooManyRequestsError(
            f"You have {in_flight.by_client[client]} requests in progress, as many as one user may; wait for some "
            "to finish (or download fewer files at once) and try again.",
            retry_after=1,
        )
    if refusal is not None:
        return request.app[RENDERERS].get(request.match_info.handler, error_response)(refusal)
    in_flight.total += 1
    in_flight.by_client[client] += 1
    resource = request.match_info.route.resource
    answering = HTTP_IN_FLIGHT.labels(resource.canonical if resource else "unmatched")
    answering.inc()
    try:
        return await handler(request)
    finally:
        in_flight.total -= 1
        answering.dec()
        in_flight.by_client[client] -= 1
        if not in_flight.by_client[client]:
            del in_flight.by_client[client]


def install(app: web.Application) -> None:
    app[IN_FLIGHT] = InFlight()
