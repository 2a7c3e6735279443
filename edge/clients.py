"""The edge's gRPC clients, created once per app and shared by every handler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from aiohttp import web

from geomesh.rpc import CHANNEL_OPTIONS
from geomesh.settings import EdgeSettings
from geomesh.v1 import catalog_pb2_grpc, scheduler_pb2_grpc


@dataclass
class Clients:
    scheduler: scheduler_pb2_grpc.SchedulerStub
    catalog: catalog_pb2_grpc.CatalogStub


SETTINGS = web.AppKey("settings", EdgeSettings)
CLIENTS = web.AppKey("clients", Clients)


async def grpc_clients(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: open the channels when the app starts, close them when it stops."""
    settings = app[SETTINGS]
    scheduler = grpc.aio.insecure_channel(settings.scheduler_address, options=CHANNEL_OPTIONS)
    catalog = grpc.aio.insecure_channel(settings.catalog_address, options=CHANNEL_OPTIONS)
    app[CLIENTS] = Clients(scheduler_pb2_grpc.SchedulerStub(scheduler), catalog_pb2_grpc.CatalogStub(catalog))
    yield
    await scheduler.close()
    await catalog.close()
