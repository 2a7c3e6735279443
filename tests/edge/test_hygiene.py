"""The edge cannot be pinned: slow headers and bodies are cut off, connections and requests in flight
are bounded (503/429 with Retry-After), links never follow an arbitrary Host header, and a client
that leaves stops the work behind its request."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from edge.app import create_app
from edge.server import quiet_repeats
from geomesh.rpc import start_server
from geomesh.settings import EdgeSettings
from geomesh.v1 import scheduler_pb2, scheduler_pb2_grpc
from tests.conftest import GLOBAL_GRANULE, Mesh, running_mesh
from tests.edge.test_jobs import call
from tests.loopback import serve_app

JOB = "4f9d0c2e-5b7a-4f0e-9d1a-2b3c4d5e6f70"


@asynccontextmanager
async def edge(mesh: Mesh, **settings: Any) -> AsyncIterator[str]:
    app = create_app(EdgeSettings(port=0, scheduler_address=mesh.scheduler_address, catalog_address=mesh.catalog_address, **settings))
    async with serve_app(app) as url:
        yield url


@contextmanager
def connection(url: str) -> Iterator[socket.socket]:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    try:
        yield sock
    finally:
        sock.close()


async def _closed_by_server(sock: socket.socket, within: float) -> float:
    """Seconds until the server closed the connection (recv gives b""), failing after `within`."""
    started = time.monotonic()
    sock.settimeout(within)
    data = await asyncio.to_thread(sock.recv, 4096)
    assert data == b"" or data.startswith(b"HTTP/1.1 4"), data[:200]
    return time.monotonic() - started


async def test_slow_headers_and_slow_bodies_are_cut_off(mesh: Mesh) -> None:
    async with edge(mesh, header_timeout_seconds=0.5, body_timeout_seconds=0.5) as url:
        with connection(url) as sock:
            sock.sendall(b"GET /jobs HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            assert await _closed_by_server(sock, 5) < 3
        with connection(url) as sock:
            sock.sendall(
                b"POST /jobs/status HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"job"
            )
            assert await _closed_by_server(sock, 5) < 3
        assert (await call("GET", f"{url}/jobs")).status_code == 200  # and the edge answers others as ever


async def test_connections_beyond_the_limit_get_a_503_at_once(mesh: Mesh) -> None:
    async with edge(mesh, max_connections=2) as url:
        with connection(url), connection(url):  # two idle connections hold both places
            await asyncio.sleep(0.1)  # let the server accept them (the count is the condition checked below)
            with connection(url) as third:
                third.settimeout(5)
                answer = await asyncio.to_thread(third.recv, 4096)
        assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in answer
        assert (await call("GET", f"{url}/jobs")).status_code == 200  # places are freed as connections close


class _SlowScheduler(scheduler_pb2_grpc.SchedulerServicer):
    """A scheduler whose GetJob waits until released: requests stay in flight as long as a test wants."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = 0

    async def GetJob(self, request: scheduler_pb2.GetJobRequest, context: grpc.aio.ServicerContext) -> scheduler_pb2.Job:
        self.waiting += 1
        await self.release.wait()
        return scheduler_pb2.Job(job_id=request.job_id, status="running", username="anonymous")


@pytest.mark.parametrize(
    ("limits", "status"), [({"max_requests_per_user": 2}, 429), ({"max_requests": 2, "max_requests_per_user": 10}, 503)]
)
async def test_requests_beyond_the_limits_are_refused_at_once_with_retry_after(
    mesh: Mesh, limits: dict[str, int], status: int
) -> None:
    slow = _SlowScheduler()
    scheduler = await start_server(
        "scheduler", lambda server: scheduler_pb2_grpc.add_SchedulerServicer_to_server(slow, server),
        ["geomesh.v1.Scheduler"], identity="scheduler",
    )
    app = create_app(EdgeSettings(port=0, scheduler_address=scheduler.address, catalog_address=mesh.catalog_address, **limits))
    try:
        async with serve_app(app) as url:
            held = [asyncio.create_task(call("GET", f"{url}/jobs/{JOB}")) for _ in range(2)]
            deadline = time.monotonic() + 10
            while slow.waiting < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            started = time.monotonic()
            refused = await call("GET", f"{url}/jobs/{JOB}")
            assert time.monotonic() - started < 2  # refused at once, not queued
            assert refused.status_code == status and refused.headers["Retry-After"] == "1"
            assert refused.json()["code"] in ("harmony.TooManyRequestsError", "harmony.ServiceUnavailableError")
            slow.release.set()
            assert [(await task).status_code for task in held] == [200, 200]
            assert (await call("GET", f"{url}/jobs/{JOB}")).status_code == 200  # the places are free again
    finally:
        await scheduler.stop(0)


async def test_links_never_follow_an_arbitrary_host_header(mesh: Mesh) -> None:
    port = mesh.url.rsplit(":", 1)[1]
    query = f"{mesh.rangeset()}?maxResults=2"
    evil = await call("GET", query, headers={"Host": "evil.example"})
    assert evil.status_code == 303 and evil.headers["Location"].startswith(f"http://127.0.0.1:{port}/jobs/")
    assert all("evil" not in link["href"] for link in evil.json()["links"])
    named = await call("GET", query, headers={"Host": f"localhost:{port}"})
    assert named.headers["Location"].startswith(f"http://localhost:{port}/jobs/")  # what harmony-py's LOCAL calls
    async with edge(mesh, public_url="https://geomesh.example.org/") as url:
        job = await call("GET", f"{url}/jobs")
        assert job.json()["links"][0]["href"].startswith("https://geomesh.example.org/jobs")
    async with edge(mesh, trusted_proxies=["127.0.0.1"]) as url:
        forwarded = await call("GET", f"{url}/jobs", headers={"X-Forwarded-Host": "maps.example.org", "X-Forwarded-Proto": "https"})
        assert forwarded.json()["links"][0]["href"].startswith("https://maps.example.org/jobs")
    untrusted = await call("GET", f"{mesh.url}/jobs", headers={"X-Forwarded-Host": "maps.example.org", "X-Forwarded-Proto": "https"})
    assert untrusted.json()["links"][0]["href"].startswith(mesh.url)


async def test_a_client_that_leaves_stops_the_work_behind_its_request(mesh: Mesh) -> None:
    """A whole-granule warp to a large grid, asked for synchronously and abandoned: its worker is
    killed (not left to finish) and its scratch removed, and the transformer serves on."""
    transformer = mesh.servers["gdal"].transformer
    request = (
        f"/C1233800302-EEDTEST/ogc-api-coverages/1.0.0/collections/all/coverage/rangeset?granuleId={GLOBAL_GRANULE}"
        "&outputCrs=EPSG:6933&interpolation=bilinear&width=8000&height=4000"
    ).encode()
    deadline = time.monotonic() + 30
    while transformer.heavy.busy:  # other tests' jobs finish first: the one busy worker will be ours
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    with connection(mesh.url) as sock:
        sock.sendall(b"GET " + request + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        deadline = time.monotonic() + 20
        while not transformer.heavy.busy:  # the warp has started on a heavy worker
            assert time.monotonic() < deadline, "the work never started"
            await asyncio.sleep(0.02)
        [worker] = transformer.heavy.busy
    left_at = time.monotonic()  # the client is gone
    while _alive(worker):  # killed, not finished: a worker that finishes lives on for the next item
        assert time.monotonic() - left_at < 10, "the abandoned work was not stopped"
        await asyncio.sleep(0.05)
    assert not transformer.heavy.busy and transformer.scratch.files() == []
    ok = await call("GET", f"{mesh.rangeset()}?granuleId={GLOBAL_GRANULE}&subset=lat(-10:10)&subset=lon(-10:10)")
    assert ok.status_code == 200


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


async def test_under_mixed_load_the_excess_is_refused_and_cheap_requests_pass(demo_dir: Path, tmp_path: Path) -> None:
    """Expensive requests beyond what the heavy worker and its queue take get a 429 at once; the
    cheap ones, on light workers, all pass meanwhile."""
    transformer = {"workers": 1, "light_workers": 1, "max_queued": 1}
    async with running_mesh(demo_dir, tmp_path, transformer=transformer) as mesh:
        base = f"{mesh.rangeset()}?granuleId={GLOBAL_GRANULE}"
        expensive = asyncio.gather(*(call("GET", f"{base}&outputCrs=EPSG:6933&interpolation=bilinear") for _ in range(8)))
        transformer_busy = mesh.servers["gdal"].transformer.heavy
        deadline = time.monotonic() + 20
        while not transformer_busy.busy:  # the warps have started
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        # A user's crops, one at a time as a notebook sends them, while the warps fill the heavy worker.
        crops = [await call("GET", f"{base}&subset=lat(-45.75:-9)&subset=lon(110:156)") for _ in range(6)]
        warps = await expensive
        assert [crop.status_code for crop in crops] == [200] * 6
        refused = [warp for warp in warps if warp.status_code == 429]
        assert refused and all(warp.status_code in (200, 429) for warp in warps)
        assert all(warp.headers["Retry-After"] == "2" and "requests waiting already" in warp.text for warp in refused)


def test_a_repeated_loop_error_is_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    try:
        quiet_repeats(loop)
        for _ in range(1000):  # accept() failing at the file limit, say
            loop.call_exception_handler({"message": "socket.accept() out of system resource", "exception": OSError(24, "Too many open files")})
    finally:
        loop.close()
    assert len([r for r in caplog.records if "socket.accept()" in r.getMessage()]) == 1


async def test_a_request_line_too_long_gets_a_json_400_saying_to_post_instead(mesh: Mesh) -> None:
    response = await call("GET", f"{mesh.rangeset()}?granuleId={'G' * 9000}")
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {
        "code": "harmony.RequestValidationError",
        "description": "Error: The request line or a header is longer than 8190 bytes; send long parameters as a form "
        "body (POST, application/x-www-form-urlencoded) instead.",
    }
    assert (await call("GET", mesh.url + "/readiness")).status_code == 200  # the edge goes on answering
