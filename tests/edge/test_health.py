"""GET /health and /readiness as Harmony answers them, and gRPC health that follows the job store:
a scheduler whose database is gone is NOT_SERVING (probes take it out) and /health says which
dependency is down; a stopped transformer is reported by the registry services it serves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import scheduler.health
from tests.conftest import POSTGRES_ADMIN_URL, Mesh, _postgres_database, running_mesh
from tests.edge.test_jobs import call

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def by_name(body: dict) -> dict[str, dict]:
    return {d["name"]: d for d in body["dependencies"]}


async def test_health_lists_every_dependency_up_without_credentials(secured: Mesh) -> None:
    response = await call("GET", secured.url + "/health")  # the secured edge: no credentials sent
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["message"]) == ("up", "geomesh is operating normally.")
    dependencies = by_name(body)
    assert {"scheduler", "job store", "staging", "catalog", "transformers of harmony/gdal"} <= dependencies.keys()
    assert all(d["status"] == "up" for d in dependencies.values()), dependencies
    assert "writable" in dependencies["staging"]["message"]
    assert dependencies["transformers of harmony/gdal"]["message"] == f"{secured.transformer_address}: serving"

    ready = await call("GET", secured.url + "/readiness")
    assert (ready.status_code, ready.text, ready.headers["Content-Type"]) == (200, "OK", "text/plain; charset=utf-8")


async def test_a_stopped_transformer_makes_health_down_naming_its_services(demo_dir: Path, tmp_path: Path) -> None:
    async with running_mesh(demo_dir, tmp_path) as mesh:
        await mesh.servers["netcdf"].stop(grace=0)
        response = await call("GET", mesh.url + "/health")
        assert response.status_code == 503, response.text
        body = response.json()
        down = {name for name, d in by_name(body).items() if d["status"] == "down"}
        netcdf = mesh.transformer_addresses["netcdf"]
        assert down and all(name.startswith("transformers of ") for name in down)
        assert all(by_name(body)[name]["message"].startswith(f"{netcdf}: unavailable") for name in down)
        assert body["message"] == f"geomesh is down: {', '.join(sorted(down, key=list(by_name(body)).index))} cannot be used."
        assert by_name(body)["transformers of harmony/gdal"]["status"] == "up"


async def test_a_stopped_scheduler_is_the_dependency_down(demo_dir: Path, tmp_path: Path) -> None:
    async with running_mesh(demo_dir, tmp_path) as mesh:
        await mesh.servers["scheduler"].stop(grace=0)
        response = await call("GET", mesh.url + "/health")
        assert response.status_code == 503
        [scheduler_down] = response.json()["dependencies"]
        assert (scheduler_down["name"], scheduler_down["status"]) == ("scheduler", "down")
        assert scheduler_down["message"].startswith("unavailable")
        assert (await call("GET", mesh.url + "/readiness")).status_code == 200  # the edge itself still answers


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from _postgres_database()


async def serving_status(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:  # health answers any caller
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return answer.status


async def wait_for_status(address: str, wanted: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while (status := await serving_status(address)) != wanted:
        assert time.monotonic() < deadline, f"still {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}"
        await asyncio.sleep(0.05)


async def test_grpc_health_follows_the_job_store(
    demo_dir: Path, tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler.health, "WATCH_SECONDS", 0.1)
    database = postgres_url.rsplit("/", 1)[1]
    async with running_mesh(demo_dir, tmp_path, scheduler={"database_url": postgres_url}) as mesh:
        await wait_for_status(mesh.scheduler_address, SERVING)
        admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')  # the database goes away
            await wait_for_status(mesh.scheduler_address, NOT_SERVING)
            response = await call("GET", mesh.url + "/health")
            assert response.status_code == 503
            store = by_name(response.json())["job store"]
            assert store["status"] == "down" and f'database "{database}" does not exist' in store["message"], store
            assert by_name(response.json())["scheduler"]["status"] == "up"
            jobs = await call("GET", mesh.url + "/jobs")
            assert (jobs.status_code, jobs.headers["Retry-After"]) == (503, "5")

            await admin.execute(f'CREATE DATABASE "{database}"')  # back (empty): reachable again
            await wait_for_status(mesh.scheduler_address, SERVING)
        finally:
            await admin.close()
