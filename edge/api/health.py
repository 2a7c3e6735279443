"""Harmony's service health: GET /health (the mesh's dependencies, 503 when one is down) and
GET /readiness (this edge answers: the probe a load balancer or Kubernetes asks)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import grpc
from aiohttp import web

from edge.clients import CLIENTS
from geomesh.v1 import scheduler_pb2

routes = web.RouteTableDef()

# One report serves every /health asked within this long: the route needs no credentials, and each
# report pings the job store and every transformer.
REPORT_SECONDS = 2.0
# The scheduler checks each dependency for at most 3 s (scheduler/health.py); it gets a little more.
ASK_SECONDS = 5.0


@dataclass
class _Reports:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    taken: float = float("-inf")
    dependencies: list[dict[str, str]] = field(default_factory=list)


REPORTS = web.AppKey("health_reports", _Reports)


def install(app: web.Application) -> None:
    app[REPORTS] = _Reports()


@routes.get("/readiness")
async def readiness(request: web.Request) -> web.Response:
    return web.Response(text="OK")


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    dependencies = await _dependencies(request.app)
    down = [d["name"] for d in dependencies if d["status"] == "down"]
    body = {
        "status": "down" if down else "up",
        "message": f"geomesh is down: {', '.join(down)} cannot be used." if down else "geomesh is operating normally.",
        "dependencies": dependencies,
    }
    return web.json_response(body, status=503 if down else 200, headers={"Cache-Control": "no-store"})


async def _dependencies(app: web.Application) -> list[dict[str, str]]:
    reports = app[REPORTS]
    async with reports.lock:  # callers arriving together share one report
        if time.monotonic() - reports.taken > REPORT_SECONDS:
            reports.dependencies = await _ask(app)
            reports.taken = time.monotonic()
        return reports.dependencies


async def _ask(app: web.Application) -> list[dict[str, str]]:
    """The scheduler's report (it sees the job store, staging, the catalog and the transformers),
    or the scheduler itself as the dependency that is down."""
    try:
        report = await app[CLIENTS].scheduler.CheckHealth(scheduler_pb2.CheckHealthRequest(), timeout=ASK_SECONDS)
    except grpc.RpcError as error:
        return [{"name": "scheduler", "status": "down", "message": f"{error.code().name.lower()}: {error.details()}"}]
    scheduler = {"name": "scheduler", "status": "up", "message": "reachable"}
    return [scheduler] + [
        {"name": d.name, "status": "up" if d.up else "down", "message": d.message} for d in report.dependencies
    ]
