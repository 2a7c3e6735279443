"""The edge's aiohttp application factory."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server

from edge import admission, auth, telemetry
from edge.api import (
    capabilities,
    collections,
    coverages,
    downloads,
    health,
    jobs,
    landing,
    openapi,
    stac,
    wms,
)
from edge.clients import SETTINGS, grpc_clients
from edge.errors import error_middleware
from edge.server import Guard, GuardedRunner, body_deadline, quiet_repeats, raise_file_limit
from geomesh.errors import ForbiddenError
from geomesh.settings import EdgeSettings


async def metrics(request: web.Request) -> web.Response:
    """Prometheus' metrics of this edge: for an admin when users are configured (Prometheus sends
    its token), else for this machine's own clients only. GEOMESH_EDGE_METRICS_PORT serves them on
    an address of their own instead (loopback unless GEOMESH_EDGE_METRICS_HOST says otherwise)."""
    if request.app[auth.AUTHENTICATOR].configured:
        if not auth.caller(request).admin:
            raise ForbiddenError("The edge's metrics are for admins: scrape them with an admin's token.")
    elif not ipaddress.ip_address(request.remote or "0.0.0.0").is_loopback:
        raise ForbiddenError("The edge's metrics answer this machine only: scrape GEOMESH_EDGE_METRICS_PORT instead.")
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(settings: EdgeSettings) -> web.Application:
    # Errors are rendered inside the telemetry middleware, so failures are counted with their real status;
    # callers are authenticated (auth.middleware) before any handler runs or any body is read.
    # Then admitted (at most so many requests at once, per user and in all), then given a deadline for their body.
    app = web.Application(
        middlewares=[telemetry.middleware, error_middleware, auth.middleware, admission.middleware, body_deadline],
        client_max_size=16 * 1024 * 1024,
    )
    app[SETTINGS] = settings
    app.on_response_prepare.append(telemetry.stamp_request_id)
    auth.install(app)
    admission.install(app)
    wms.install(app)
    health.install(app)
    app.cleanup_ctx.append(grpc_clients)
    app.router.add_get("/metrics", metrics)
    # The rangeset route must come before /collections/{id}, whose pattern would also match it.
    for module in (health, coverages, downloads, jobs, stac, wms, openapi, capabilities, landing, collections):
        app.add_routes(auth.checked(module.routes))
    return app


def make_runner(app: web.Application, **options: Any) -> web.AppRunner:
    """The edge's runner: connections bounded and timed (edge/server.py), handlers cancelled when
    their client goes."""
    settings = app[SETTINGS]
    file_limit = raise_file_limit()
    guard = Guard(min(settings.max_connections, max(64, file_limit - 256)), settings.header_timeout_seconds)
    quiet_repeats(asyncio.get_running_loop())
    return GuardedRunner(
        app,
        guard,
        access_log_class=telemetry.AccessLogger,
        access_log=telemetry.ACCESS_LOG,
        keepalive_timeout=settings.keepalive_timeout_seconds,
        **options,
    )


async def serve(settings: EdgeSettings) -> web.AppRunner:
    if settings.metrics_port is not None:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    runner = make_runner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    return runner
