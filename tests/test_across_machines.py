"""geomesh spread over machines: the 177-granule job submitted through one edge, every output downloaded
through another, byte-identical to a one-machine run, while a scheduler host and a transformer host are
killed mid-job.

Two variants of one test: on separate hosts (network namespaces joined by a bridge: catalog, two gdal
transformer replicas behind one DNS name, two schedulers, two edges, PostgreSQL, SeaweedFS holding the
staging bucket and the demo granules, so that no host shares a folder with another), skipped where
namespaces cannot be made; and the same services on 127.0.0.1, each with its own port and folder, always.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from geomesh.identity import make_certificates
from tests.conftest import _postgres_database, running_mesh
from tests.edge.test_jobs import submit, wait_for
from tests.hosts import Network, netns_unavailable, start_postgres
from tests.multihost import (
    RANGESET,
    SERVICES,
    Layout,
    LocalMachine,
    log_tails,
    on,
    running,
)
from tests.s3_server import S3Server, start_seaweedfs

pytestmark = pytest.mark.slow

COLLECTION_FOLDER = "granules/C1233800302-EEDTEST"
GRANULES = 177
KILLED = ("scheduler1", "transformer1")
KILL_AT = 20  # percent done


@dataclass
class Outcome:
    job: dict[str, Any]
    wall_seconds: float
    downloads: dict[str, str]  # file name -> sha256
    redirected: int  # downloads answered by a redirect to the object store
    transforms: tuple[float, float]  # calls each replica answered: the first until it was killed


@pytest.fixture(scope="module")
def one_machine(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], float]]:
    """The reference: the same job on the one-machine default (local files, local staging), its outputs' digests."""
    import asyncio

    async def run() -> tuple[dict[str, str], float]:
        async with running_mesh(demo_dir, tmp_path_factory.mktemp("one-machine")) as mesh:
            started = time.monotonic()
            job = await wait_for(mesh, await submit(mesh, ""), seconds=300)
            wall = time.monotonic() - started
            assert job["status"] == "successful"
            files = [p for p in (mesh.staging_dir / job["jobID"]).rglob("*") if p.is_file()]
            return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}, wall

    yield asyncio.run(run())


def _upload(s3: S3Server, demo_dir: Path, granules: str, staging: str) -> None:
    """The demo granules into one bucket, as an operator copies a data folder's granules/; another for outputs."""
    client = s3.client()
    client.create_bucket(Bucket=granules)
    client.create_bucket(Bucket=staging)
    files = sorted((demo_dir / COLLECTION_FOLDER).iterdir())
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda path: client.upload_file(str(path), granules, f"{COLLECTION_FOLDER}/{path.name}"), files))


def _spread_job(layout: Layout, demo_dir: Path) -> Outcome:
    """Submit through edge1, kill KILLED at KILL_AT %, follow to the end, download everything through edge2."""
    client = layout.machines["client"]
    with running(layout, demo_dir):
        started = time.monotonic()
        submitted = on(client, lambda: requests.get(layout.edge_url("edge1") + RANGESET, allow_redirects=False, timeout=60))
        assert submitted.status_code == 303, submitted.text
        job_id = submitted.json()["jobID"]
        killed, deadline = False, started + 300
        while True:
            job = on(client, lambda: requests.get(f"{layout.edge_url('edge1')}/jobs/{job_id}?limit=1", timeout=30).json())
            if not killed and job["progress"] >= KILL_AT:
                first_replica = layout.transforms_done("transformer1")
                for name in KILLED:
                    layout.machines[name].kill()
                killed = True
            if job["status"] not in ("running", "running_with_errors"):
                break
            assert time.monotonic() < deadline, f"job {job_id} still {job['status']} at {job['progress']}%:\n{log_tails(layout)}"
            time.sleep(0.1)  # the poll interval; the job's own end is the condition
        wall = time.monotonic() - started
        assert killed, "the job ended before anything was killed"
        downloads, redirected = on(client, lambda: _download_all(layout.edge_url("edge2"), job_id))
        final = on(client, lambda: requests.get(f"{layout.edge_url('edge2')}/jobs/{job_id}?limit=10000", timeout=60).json())
        transforms = (first_replica, layout.transforms_done("transformer2"))
    return Outcome(final, wall, downloads, redirected, transforms)


def _download_all(edge: str, job_id: str) -> tuple[dict[str, str], int]:
    session = requests.Session()
    job = session.get(f"{edge}/jobs/{job_id}?limit=10000", timeout=60).json()
    digests, redirected = {}, 0
    for link in (link for link in job["links"] if link["rel"] == "data"):
        assert link["href"].startswith(f"{edge}/service-results/{job_id}/")
        response = session.get(link["href"], timeout=60)
        response.raise_for_status()
        redirected += bool(response.history) and response.history[0].status_code == 307
        digests[link["href"].rsplit("/", 1)[1]] = hashlib.sha256(response.content).hexdigest()
    return digests, redirected


def _check(outcome: Outcome, reference: dict[str, str], layout: Layout) -> None:
    job = outcome.job
    assert (job["status"], job["progress"], job.get("errors")) == ("successful", 100, None), log_tails(layout)
    hrefs = [link["href"] for link in job["links"] if link["rel"] == "data"]
    assert len(hrefs) == len(set(hrefs)) == GRANULES  # every output exactly once, none lost
    assert len(outcome.downloads) == GRANULES and outcome.redirected == GRANULES
    assert outcome.downloads == reference  # byte for byte what one machine makes
    first, second = outcome.transforms
    assert first > 0 and second > 0, f"work reached one replica only: {outcome.transforms}"  # round_robin, not pick_first


def test_on_loopback_with_separate_ports_and_folders(
    demo_dir: Path, tmp_path: Path, s3: S3Server, one_machine: tuple[dict[str, str], float]
) -> None:
    reference, one_machine_seconds = one_machine
    bucket = f"demo-{time.monotonic_ns()}"
    _upload(s3, demo_dir, bucket, f"{bucket}-staging")
    database = _postgres_database()  # a database of its own on the local PostgreSQL (skips without one)
    database_url = next(database)
    names = (*SERVICES, "metrics1", "metrics2")
    ports = {name: port for name, port in zip(names, _free_ports(len(names)), strict=True)}
    machines = {name: LocalMachine(name) for name in (*SERVICES, "client")}
    layout = Layout(
        machines=machines,  # type: ignore[arg-type]
        ports=ports,
        catalog_address=f"127.0.0.1:{ports['catalog']}",
        transformer_addresses=f"127.0.0.1:{ports['transformer1']},127.0.0.1:{ports['transformer2']}",
        scheduler_addresses=f"127.0.0.1:{ports['scheduler1']},127.0.0.1:{ports['scheduler2']}",
        database_url=database_url, s3=s3, granules_url=f"s3://{bucket}/",
        staging_url=f"s3://{bucket}-staging/outputs", work_dir=tmp_path, certificates=_certificates(tmp_path),
    )
    try:
        outcome = _spread_job(layout, demo_dir)
    finally:
        next(database, None)
    _check(outcome, reference, layout)
    _report("seven processes on loopback", one_machine_seconds, outcome)


def _certificates(folder: Path) -> Path:
    make_certificates(folder / "certs")
    return folder / "certs"


def _report(where: str, one_machine_seconds: float, outcome: Outcome) -> None:
    print(
        f"\n177-granule job: one machine (local staging) {one_machine_seconds:.1f} s; {where} (S3 staging, a scheduler "
        f"and a transformer killed at {KILL_AT} %) {outcome.wall_seconds:.1f} s; transforms per replica "
        f"{outcome.transforms[0]:.0f} + {outcome.transforms[1]:.0f}; {len(outcome.downloads)} downloads identical"
    )


def _free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.skipif(netns_unavailable() is not None, reason=f"separate hosts need network namespaces: {netns_unavailable()}")
def test_on_separate_hosts(demo_dir: Path, tmp_path: Path, one_machine: tuple[dict[str, str], float]) -> None:
    reference, one_machine_seconds = one_machine
    with Network() as network:
        hosts = {name: network.add_host(name) for name in ("db", "s3", *SERVICES, "client")}
        # transformer.mesh: both replicas, as a Kubernetes headless Service names its pods.
        network.add_dns({"transformer": [hosts["transformer1"], hosts["transformer2"]]})
        (tmp_path / "db").mkdir()
        postgres = start_postgres(hosts["db"], tmp_path / "db")
        with start_seaweedfs(tmp_path / "s3", hosts["s3"].ip, host=hosts["s3"]) as s3:
            on(hosts["s3"], lambda: _upload(s3, demo_dir, "demo", "staging"))
            layout = Layout(
                machines=hosts,  # type: ignore[arg-type]
                ports={"catalog": 50052, "transformer1": 50061, "transformer2": 50061,
                       "scheduler1": 50051, "scheduler2": 50051, "edge1": 3000, "edge2": 3000,
                       "metrics1": 9153, "metrics2": 9153},
                catalog_address="catalog.mesh:50052",
                transformer_addresses="dns:///transformer.mesh:50061",
                scheduler_addresses="scheduler1.mesh:50051,scheduler2.mesh:50051",
                database_url=postgres.url.replace("postgresql://", "postgresql+asyncpg://"),
                s3=s3, granules_url="s3://demo/", staging_url="s3://staging/outputs", work_dir=tmp_path / "hosts",
                certificates=_certificates(tmp_path),
            )
            outcome = _spread_job(layout, demo_dir)
        _check(outcome, reference, layout)
    _report(f"{len(hosts)} hosts", one_machine_seconds, outcome)
