"""Clients that go away mid-answer, or before it: no error of ours, so no ERROR log and no 500 in
geomesh_http_requests_total, but a 499 (nginx's "client closed request")."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator
from urllib.parse import urlparse

import pytest
import pytest_asyncio
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from edge.app import create_app
from geomesh.settings import EdgeSettings
from tests.conftest import GLOBAL_GRANULE, HARMONY_EXAMPLE, Mesh
from tests.edge.test_jobs import call, submit, wait_for

RANGESET_ROUTE = "/{collectionId}/ogc-api-coverages/1.0.0/collections/{variable}/coverage/rangeset"
RESULT_ROUTE = "/service-results/{jobID}/{itemID}/{fileName}"


@pytest_asyncio.fixture(loop_scope="session")
async def narrow_edge(mesh: Mesh) -> AsyncIterator[str]:
    """A second edge on the mesh whose connections have a small send buffer, as over a slow link: a
    client that stops reading then holds the edge mid-answer (with the kernel's loopback buffers
    the edge would have handed the whole ~340 KB output to the kernel before the client left)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # accepted connections inherit it
    listener.bind(("127.0.0.1", 0))
    app = create_app(EdgeSettings(port=0, scheduler_address=mesh.scheduler_address, catalog_address=mesh.catalog_address))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    await web.SockSite(runner, listener).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        await runner.cleanup()


def leave(url: str, *, after_headers: bool) -> bytes:
    """GET `url` on a socket with a small receive buffer, and reset the connection: once the
    response headers are in (mid-response), or right after sending the request (before it)."""
    parsed = urlparse(url)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(60)
        sock.connect((parsed.hostname, parsed.port))
        sock.sendall(f"GET {parsed.path}?{parsed.query} HTTP/1.1\r\nHost: {parsed.netloc}\r\n\r\n".encode())
        received = b""
        while after_headers and b"\r\n\r\n" not in received:
            chunk = sock.recv(1024)
            assert chunk, f"the connection closed before the response headers: {received!r}"
            received += chunk
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset: gone at once
    return received


async def requests_by_status(edge: str, route: str) -> dict[str, float]:
    text = (await call("GET", f"{edge}/metrics")).text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "geomesh_http_requests":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels["route"] == route:
                    counts[sample.labels["status"]] = counts.get(sample.labels["status"], 0) + sample.value
    return counts


async def counted(edge: str, route: str, before: dict[str, float], status: str, timeout: float = 30) -> dict[str, float]:
    """The counts once `status` went up by one (the edge notices a reset at its next write)."""
    deadline = time.monotonic() + timeout
    while True:
        now = await requests_by_status(edge, route)
        if now.get(status, 0) > before.get(status, 0) or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("after_headers", [True, False], ids=["mid-response", "before the response"])
async def test_a_client_that_leaves_a_rangeset_stream_is_a_499_not_an_error(
    mesh: Mesh, narrow_edge: str, caplog: pytest.LogCaptureFixture, after_headers: bool
) -> None:
    url = f"{narrow_edge}/{HARMONY_EXAMPLE}/ogc-api-coverages/1.0.0/collections/all/coverage/rangeset?granuleId={GLOBAL_GRANULE}"
    before = await requests_by_status(narrow_edge, RANGESET_ROUTE)
    with caplog.at_level(logging.INFO):
        received = await asyncio.to_thread(leave, url, after_headers=after_headers)
        after = await counted(narrow_edge, RANGESET_ROUTE, before, "499")
    if after_headers:
        assert received.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding: chunked" in received
    assert after.get("499", 0) == before.get("499", 0) + 1, after
    assert after.get("500", 0) == before.get("500", 0), after
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("the client left before GET" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
    # The edge still answers the next client in full.
    assert (await call("GET", url.replace(narrow_edge, mesh.url))).status_code == 200


async def test_a_client_that_leaves_mid_download_of_a_job_output_is_a_499_not_an_error(
    mesh: Mesh, narrow_edge: str, caplog: pytest.LogCaptureFixture
) -> None:
    job = await wait_for(mesh, await submit(mesh, f"granuleId={GLOBAL_GRANULE}&forceAsync=true"))
    (link,) = [link["href"] for link in job["links"] if link["rel"] == "data"]
    url = link.replace(mesh.url, narrow_edge)
    before = await requests_by_status(narrow_edge, RESULT_ROUTE)
    with caplog.at_level(logging.INFO):
        received = await asyncio.to_thread(leave, url, after_headers=True)
        after = await counted(narrow_edge, RESULT_ROUTE, before, "499")
    assert received.startswith(b"HTTP/1.1 200")
    length = int(received.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
    assert length > 200_000  # more than the edge can hand to the kernel before the client reads
    assert after.get("499", 0) == before.get("499", 0) + 1, after
    assert after.get("500", 0) == before.get("500", 0) and after.get("200", 0) == before.get("200", 0), after
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert not any("download of" in r.getMessage() for r in caplog.records)  # not a failed download either
    whole = await call("GET", url)
    assert whole.status_code == 200 and len(whole.content) == length


async def test_redirects_are_counted_with_their_status_not_as_500s(mesh: Mesh) -> None:
    """A raised redirect (303 to a job's page) was counted as a 500."""
    before = await requests_by_status(mesh.url, RANGESET_ROUTE)
    await submit(mesh, "maxResults=2")
    after = await requests_by_status(mesh.url, RANGESET_ROUTE)
    assert after.get("303", 0) == before.get("303", 0) + 1
    assert after.get("500", 0) == before.get("500", 0)
