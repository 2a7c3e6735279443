"""Loopback for tests: an aiohttp app on a free port for the length of a test, and free ports for `geomesh up`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

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


@dataclass
class Up:
    """A running `geomesh up`: its port options, its output (every service's lines) and its process."""

    ports: dict[str, int]
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def edge(self) -> str:
        return f"http://127.0.0.1:{self.ports['--port']}"


@contextmanager
def geomesh_up(data_dir: Path, work: Path, timeout: float = 90.0, **settings: str) -> Iterator[Up]:
    """`geomesh up` on the demo data in data_dir, its jobs and outputs in `work` (SQLite, a folder),
    with GEOMESH_* `settings` added, until it says it is up; stopped afterwards (SIGTERM, then its
    whole process session killed)."""
    ports = up_ports()
    command = [sys.executable, "-m", "geomesh.cli", "up", "--host", "127.0.0.1", "--data-dir", str(data_dir)]
    command += [str(part) for option, port in ports.items() for part in (option, port)]
    env = {
        **os.environ,
        "GEOMESH_SCHEDULER_DATABASE_URL": f"sqlite+aiosqlite:///{work / 'jobs.db'}",
        "GEOMESH_SCHEDULER_STAGING_URL": (work / "staging").resolve().as_uri(),
        **settings,
    }
    log = work / "geomesh.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while b"geomesh is up" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"geomesh up did not come up:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)  # the poll interval of the condition above
        yield Up(ports, log, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: the services it started go too
            process.wait()


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
