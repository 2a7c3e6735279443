"""A scheduler killed with SIGKILL in the middle of a job: a new one finishes it, every output once."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from geomesh.rpc import open_channel
from geomesh.v1 import request_pb2, scheduler_pb2, scheduler_pb2_grpc
from tests.conftest import HARMONY_EXAMPLE, Mesh

GRANULES = 60
CALLER = scheduler_pb2.Caller(user="alice")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SchedulerProcess:
    """`geomesh serve scheduler` as its own process on the mesh's catalog; started again on the same data."""

    def __init__(self, mesh: Mesh, data_dir: Path, database_url: str) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "GEOMESH_SCHEDULER_PORT": str(self.port),
            "GEOMESH_SCHEDULER_CATALOG_ADDRESS": mesh.catalog_address,
            "GEOMESH_SCHEDULER_DATA_DIR": str(data_dir),
            "GEOMESH_SCHEDULER_DATABASE_URL": database_url,
            "GEOMESH_SCHEDULER_LEASE_SECONDS": "1",
            "GEOMESH_SCHEDULER_DISPATCH_SLOTS": "2",
            "GEOMESH_SCHEDULER_LOG_LEVEL": "WARNING",
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "geomesh.cli", "serve", "scheduler"], env=self.env)
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            assert self.process.poll() is None, "the scheduler exited during start-up"
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)


@pytest.fixture
def scheduler_process(mesh: Mesh, tmp_path: Path, database_url: str) -> Iterator[SchedulerProcess]:
    process = SchedulerProcess(mesh, tmp_path, database_url)
    yield process
    process.stop()


async def job_state(address: str, job_id: str) -> scheduler_pb2.Job:
    async with open_channel(address, "scheduler") as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        return await stub.GetJob(scheduler_pb2.GetJobRequest(caller=CALLER, job_id=job_id, limit=1000))


async def test_kill_9_mid_job_then_restart_finishes_every_output_once(
    scheduler_process: SchedulerProcess, tmp_path: Path
) -> None:
    await asyncio.to_thread(scheduler_process.start)
    address = scheduler_process.address
    request = request_pb2.DataRequest(
        request_id="restart-test", user="alice", collection=HARMONY_EXAMPLE, max_results=GRANULES, request_url="grpc"
    )
    async with open_channel(address, "scheduler") as channel:
        [response] = [r async for r in scheduler_pb2_grpc.SchedulerStub(channel).Execute(request)]
    job_id = response.job.job_id

    deadline = time.monotonic() + 30
    while (job := await job_state(address, job_id)).link_count < 5:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    scheduler_process.kill()
    assert job.link_count < GRANULES, "the job finished before the kill: make it longer"

    await asyncio.to_thread(scheduler_process.start)  # a new process, same job database
    deadline = time.monotonic() + 60
    while (job := await job_state(address, job_id)).status != "successful":
        assert job.status == "running" and time.monotonic() < deadline, job.status
        await asyncio.sleep(0.1)
    hrefs = [link.href for link in job.links]
    assert job.link_count == len(hrefs) == len(set(hrefs)) == GRANULES
    assert len({link.title for link in job.links}) == GRANULES  # one output per granule
    staged = sorted(p for p in (tmp_path / "staging" / job_id).rglob("*") if p.is_file())
    assert len(staged) == GRANULES and not [p for p in staged if p.name.endswith(".part")]
    assert job.progress == 100 and not job.errors

