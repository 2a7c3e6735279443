"""The edge's gRPC clients, created once per app and shared by every handler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

from aiohttp import web

from geomesh.balancer import BalancedStub, Deadlines
from geomesh.settings import EdgeSettings
from geomesh.v1 import catalog_pb2_grpc, scheduler_pb2_grpc


@dataclass
class Clients:
    scheduler: scheduler_pb2_grpc.SchedulerStub
    catalog: catalog_pb2_grpc.CatalogStub


SETTINGS = web.AppKey("settings", EdgeSettings)
CLIENTS = web.AppKey("clients", Clients)


async def grpc_clients(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: open the channels when the app starts, close them when it stops.

    Each address setting may name several schedulers (or catalogs): calls go to them in turn and
    skip one that is down, so the edge answers while any is up.
    """
    settings = app[SETTINGS]
    credentials = settings.mesh.credentials("edge")
    deadlines = Deadlines(unary=settings.rpc_timeout_seconds, stream=settings.stream_timeout_seconds)
    scheduler = BalancedStub(scheduler_pb2_grpc.SchedulerStub, settings.scheduler_address, credentials, "scheduler", deadlines)
    catalog = BalancedStub(catalog_pb2_grpc.CatalogStub, settings.catalog_address, credentials, "catalog", deadlines)
    app[CLIENTS] = Clients(cast(scheduler_pb2_grpc.SchedulerStub, scheduler), cast(catalog_pb2_grpc.CatalogStub, catalog))
    yield
    await scheduler.close()
    await catalog.close()
