"""A data host for the tests: files over HTTP with byte ranges, a bearer token it demands, failures on demand.

It stands in for a DAAC's https server (or a presigned-URL host): a real aiohttp server on
127.0.0.1 that records the Authorization header of every request it answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from tests.loopback import serve_app


@dataclass
class DataHost:
    root: Path
    token: str | None = None  # demanded as "Authorization: Bearer <token>"; None: open to all
    failures: int = 0  # the next this many requests are answered 503
    delay: float = 0.0  # seconds before each answer
    seen: list[str | None] = field(default_factory=list)  # Authorization headers received, in order
    url: str = ""

    async def _file(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request.headers.get("Authorization"))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.failures > 0:
            self.failures -= 1
            return web.Response(status=503, text="busy")
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401, text="who are you?")
        path = self.root / request.match_info["path"]
        if not path.is_file():
            return web.Response(status=404)
        return web.FileResponse(path)  # answers Range requests with 206, as data hosts do

    def href(self, relative: str) -> str:
        return f"{self.url}/{relative}"


@asynccontextmanager
async def serve_data_host(root: Path, **options: object) -> AsyncIterator[DataHost]:
    host = DataHost(root, **options)  # type: ignore[arg-type]
    app = web.Application()
    app.router.add_get("/{path:.+}", host._file)
    async with serve_app(app) as url:
        host.url = url
        yield host
