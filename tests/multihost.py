"""The mesh spread over machines: each service its own process on the machine given it, nothing shared
but the network. Used by the multi-host tests, on network-namespace hosts or (the always-run variant)
on 127.0.0.1 with separate ports and folders.

A Machine is what a service runs on: tests.hosts.Host (a network namespace) or LocalMachine (this
machine's loopback). Every process of a machine dies with machine.kill(), as a host that fails would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.hosts import in_namespace
from tests.s3_server import S3Server

ROOT = Path(__file__).resolve().parents[1]
GEOMESH = str(Path(sys.executable).parent / "geomesh")
COLLECTION = "C1233800302-EEDTEST"
RANGESET = f"/{COLLECTION}/ogc-api-coverages/1.0.0/collections/all/coverage/rangeset"
START_TIMEOUT = 60.0
T = TypeVar("T")


class Machine(Protocol):
    name: str
    ip: str

    def popen(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, log: Path, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]: ...

    def kill(self) -> None: ...

    def wait_for_port(self, port: int, timeout: float = 10.0, process: subprocess.Popen[bytes] | None = None) -> None: ...


@dataclass
class LocalMachine:
    """A "machine" on this host's loopback: its own processes and folders, 127.0.0.1 shared with the others."""

    name: str
    ip: str = "127.0.0.1"
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def popen(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, log: Path, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            process = subprocess.Popen(
                list(argv), env=dict(env) if env is not None else None, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True,
            )
        self.processes.append(process)
        return process

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def wait_for_port(self, port: int, timeout: float = 10.0, process: subprocess.Popen[bytes] | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{self.name}: the process on port {port} exited with {process.returncode}")
            try:
                socket.create_connection((self.ip, port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"{self.name}: nothing listens on {self.ip}:{port} after {timeout:.0f} s")


@dataclass
class Layout:
    """Who runs where and how each finds the others."""

    machines: dict[str, Machine]  # each of SERVICES, and "client" for the test's HTTP calls
    ports: dict[str, int]  # by the same names; "metrics1", "metrics2": the transformers' /metrics
    catalog_address: str  # as the schedulers and edges are given it
    transformer_addresses: str  # as the registry is given it: a DNS name of both replicas, or a list
    scheduler_addresses: str  # as the edges are given it
    database_url: str
    s3: S3Server  # its endpoint reachable from every machine
    granules_url: str  # where the demo granules were copied, e.g. s3://demo/
    staging_url: str
    work_dir: Path
    certificates: Path  # the mesh's CA and every service's certificate (`geomesh certs`): mutual TLS

    def edge_url(self, name: str) -> str:
        return f"http://{self.machines[name].ip}:{self.ports[name]}"

    def transforms_done(self, name: str) -> float:
        """Transform calls a transformer has answered, from its /metrics (read on the client machine)."""
        url = f"http://{self.machines[name].ip}:{self.ports['metrics' + name[-1]]}/metrics"
        text = on(self.machines["client"], lambda: requests.get(url, timeout=10).text)
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "geomesh_grpc_server_handled_total" and sample.labels.get("method") == "Transform"
        )


def _environment(layout: Layout, name: str) -> dict[str, str]:
    """One service's settings, as `geomesh serve` reads them: every setting named."""
    machine, port, folder = layout.machines[name], layout.ports[name], layout.work_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder), "GEOMESH_LOG_FORMAT": "text",
        "GEOMESH_MESH_TLS_DIR": str(layout.certificates),
        # No S3 credentials from this machine's environment or files leak into the services.
        "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    s3 = {
        "GEOMESH_S3_ENDPOINT_URL": layout.s3.endpoint_url, "GEOMESH_S3_REGION": layout.s3.region,
        "GEOMESH_S3_ACCESS_KEY_ID": layout.s3.access_key_id, "GEOMESH_S3_SECRET_ACCESS_KEY": layout.s3.secret_access_key,
    }
    if name == "catalog":
        return base | {
            "GEOMESH_CATALOG_HOST": machine.ip, "GEOMESH_CATALOG_PORT": str(port),
            "GEOMESH_CATALOG_DATA_DIR": str(folder), "GEOMESH_CATALOG_DATA_URL": layout.granules_url,
            "GEOMESH_GDAL_ADDRESSES": layout.transformer_addresses,
            # Families this mesh does not run: registered, never called.
            "GEOMESH_NETCDF_ADDRESSES": "127.0.0.1:1", "GEOMESH_SWATH_ADDRESSES": "127.0.0.1:1",
        }
    if name.startswith("transformer"):
        return base | s3 | {
            "GEOMESH_TRANSFORMER_FAMILY": "gdal", "GEOMESH_TRANSFORMER_HOST": machine.ip,
            "GEOMESH_TRANSFORMER_PORT": str(port), "GEOMESH_TRANSFORMER_SCRATCH_DIR": str(folder / "scratch"),
            "GEOMESH_TRANSFORMER_WORKERS": "2", "GEOMESH_TRANSFORMER_ALLOWED_URLS": layout.granules_url,
            "GEOMESH_TRANSFORMER_METRICS_PORT": str(layout.ports[f"metrics{name[-1]}"]),
            "GEOMESH_TRANSFORMER_METRICS_HOST": machine.ip,
        }
    if name.startswith("scheduler"):
        return base | s3 | {
            "GEOMESH_SCHEDULER_HOST": machine.ip, "GEOMESH_SCHEDULER_PORT": str(port),
            "GEOMESH_SCHEDULER_CATALOG_ADDRESS": layout.catalog_address, "GEOMESH_SCHEDULER_DATA_DIR": str(folder),
            "GEOMESH_SCHEDULER_DATABASE_URL": layout.database_url, "GEOMESH_SCHEDULER_STAGING_URL": layout.staging_url,
            # A killed scheduler's items go to the other after this long (30 s by default).
            "GEOMESH_SCHEDULER_LEASE_SECONDS": "3", "GEOMESH_SCHEDULER_RETRY_DELAY_SECONDS": "0.5",
            "GEOMESH_SCHEDULER_MAX_ATTEMPTS": "5",
        }
    return base | {
        "GEOMESH_EDGE_HOST": machine.ip, "GEOMESH_EDGE_PORT": str(port),
        "GEOMESH_EDGE_SCHEDULER_ADDRESS": layout.scheduler_addresses, "GEOMESH_EDGE_CATALOG_ADDRESS": layout.catalog_address,
    }


SERVICES = ("catalog", "transformer1", "transformer2", "scheduler1", "scheduler2", "edge1", "edge2")


@contextmanager
def running(layout: Layout, demo_dir: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Start every service on its machine (the catalog with its own copy of catalog.json), wait until
    each listens, and kill them all afterwards."""
    catalog_dir = layout.work_dir / "catalog"
    catalog_dir.mkdir(parents=True, exist_ok=True)
    (catalog_dir / "catalog.json").write_bytes((demo_dir / "catalog.json").read_bytes())
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for group in (("catalog", "transformer1", "transformer2"), ("scheduler1", "scheduler2"), ("edge1", "edge2")):
            for name in group:
                service = "transformer" if name.startswith("transformer") else name.rstrip("12")
                processes[name] = layout.machines[name].popen(
                    [GEOMESH, "serve", service], env=_environment(layout, name),
                    log=layout.work_dir / f"{name}.log", cwd=layout.work_dir / name,
                )
            for name in group:
                layout.machines[name].wait_for_port(layout.ports[name], START_TIMEOUT, processes[name])
        yield processes
    finally:
        for name in SERVICES:
            layout.machines[name].kill()


def on(machine: Machine, work: Callable[[], T]) -> T:
    """Run work as if on machine: a network namespace's sockets are made by a thread inside it."""
    namespace = getattr(machine, "namespace", None)
    return work() if namespace is None else in_namespace(namespace, work)


def log_tails(layout: Layout, lines: int = 15) -> str:
    """The end of every service's log, for a failure message."""
    parts = []
    for name in SERVICES:
        path = layout.work_dir / f"{name}.log"
        if path.exists():
            parts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
    return "\n".join(parts)
