"""Loopback for tests: an aiohttp app on a free port for the length of a test, and free ports for `geomesh up`."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from geomesh.settings import TRANSFORMER_FAMILIES


@asynccontextmanager
async def serve_app(app: web.Application, shutdown_timeout: float = 1) -> AsyncIterator[str]:
    """Yield the app's root URL, e.g. http://127.0.0.1:40123, and stop it afterwards (an edge's app
    with the edge's own runner, as `geomesh serve edge` runs it)."""
    from edge.app import make_runner
    from edge.clients import SETTINGS

    if SETTINGS in app:
        runner: web.AppRunner = make_runner(app, shutdown_timeout=shutdown_timeout)
    else:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def up_ports() -> dict[str, int]:
    """`geomesh up`'s port options, all free: it numbers transformers and metrics ports on from a first,
    so every port it opens is taken from one block of consecutive free ports."""
    families = len(TRANSFORMER_FAMILIES)
    edge = _free_port_block(3 + families + families + 2)  # edge, scheduler, catalog, transformers, metrics
    return {
        "--port": edge, "--scheduler-port": edge + 1, "--catalog-port": edge + 2,
        "--transformer-port": edge + 3, "--metrics-port": edge + 3 + families,
    }


def _free_port_block(count: int) -> int:
    """The first of `count` consecutive free loopback ports: one block for every port `geomesh up` opens."""
    for _ in range(100):
        held: list[socket.socket] = []
        try:
            for offset in range(count):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", held[0].getsockname()[1] + offset if offset else 0))
            return held[0].getsockname()[1]
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError(f"found no {count} consecutive free ports")
