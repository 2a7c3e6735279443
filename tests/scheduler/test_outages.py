"""Short outages lose no work: a transformer killed (SIGKILL) and back 3 s later mid-job, and the
catalog down while a scheduler restarts, cost no granule."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import running_mesh
from tests.edge.test_jobs import call, submit, wait_for

GRANULES = 40


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _transformer(port: int, folder: Path) -> subprocess.Popen[bytes]:
    """`geomesh serve transformer` (gdal) on a fixed port, as its own process."""
    environment = {
        **os.environ, "GEOMESH_TRANSFORMER_PORT": str(port), "GEOMESH_TRANSFORMER_SCRATCH_DIR": str(folder),
        "GEOMESH_TRANSFORMER_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen([sys.executable, "-m", "geomesh.cli", "serve", "transformer"], env=environment)
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process
        assert process.poll() is None and time.monotonic() < deadline, "the transformer did not start"
        time.sleep(0.05)  # the poll interval of the condition above


async def _progress(mesh: object, job_id: str, at_least: int) -> None:
    deadline = time.monotonic() + 60
    while (job := (await call("GET", f"{mesh.url}/jobs/{job_id}?limit=1")).json())["progress"] < at_least:  # type: ignore[attr-defined]
        assert job["status"] == "running" and time.monotonic() < deadline, job
        await asyncio.sleep(0.05)


async def test_a_transformer_killed_and_back_3_s_later_loses_nothing(demo_dir: Path, tmp_path: Path) -> None:
    port = _free_port()
    transformer = _transformer(port, tmp_path / "scratch")
    try:
        async with running_mesh(
            demo_dir, tmp_path / "work", elsewhere={"gdal": f"127.0.0.1:{port}"},
            # The default attempts (3) and a retry delay long enough that attempts alone could not ride it out.
            scheduler={"max_attempts": 3, "retry_delay_seconds": 0.2},
        ) as mesh:
            job_id = await submit(mesh, f"maxResults={GRANULES}")
            await _progress(mesh, job_id, 10)
            os.kill(transformer.pid, signal.SIGKILL)
            transformer.wait()
            await asyncio.sleep(3)  # the outage itself, as long as the issue measured
            transformer = _transformer(port, tmp_path / "scratch")
            job = await wait_for(mesh, job_id, ("successful", "complete_with_errors", "failed"), seconds=120)
            assert (job["status"], job.get("errors")) == ("successful", None), job
            data = [link["href"] for link in job["links"] if link["rel"] == "data"]
            assert len(data) == len(set(data)) == GRANULES
    finally:
        transformer.kill()
        transformer.wait()


async def test_a_scheduler_restarted_while_the_catalog_is_down_finishes_the_job(demo_dir: Path, tmp_path: Path) -> None:
    from scheduler.service import serve as serve_scheduler

    work = tmp_path / "work"
    async with running_mesh(demo_dir, work) as mesh:
        job_id = await submit(mesh, f"maxResults={GRANULES}")
        await call("GET", f"{mesh.url}/jobs/{job_id}/pause")
        scheduler, catalog = mesh.servers["scheduler"], mesh.servers["catalog"]
        await scheduler.stop(grace=0)
        await catalog.stop(grace=0)  # the catalog is gone for the rest of the job
        from geomesh.settings import SchedulerSettings

        restarted = await serve_scheduler(
            SchedulerSettings(port=0, catalog_address=mesh.catalog_address, data_dir=work, retry_delay_seconds=0.05)
        )
        try:
            from geomesh.rpc import open_channel
            from geomesh.v1 import scheduler_pb2, scheduler_pb2_grpc

            async with open_channel(restarted.address, "scheduler") as channel:
                stub = scheduler_pb2_grpc.SchedulerStub(channel)
                caller = scheduler_pb2.Caller(user="anonymous")
                await stub.ControlJob(scheduler_pb2.ControlJobRequest(caller=caller, job_id=job_id, action=scheduler_pb2.ControlJobRequest.RESUME))
                deadline = time.monotonic() + 60
                while (job := await stub.GetJob(scheduler_pb2.GetJobRequest(caller=caller, job_id=job_id))).status == "running":
                    assert time.monotonic() < deadline, job.progress
                    await asyncio.sleep(0.05)
                assert (job.status, job.link_count, list(job.errors)) == ("successful", GRANULES, [])
        finally:
            await restarted.stop(grace=0)
