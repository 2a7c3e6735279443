"""What the benchmarks share: a real `geomesh up` on free loopback ports, and the machine it ran on.

The mesh runs in its own session, so stopping it (SIGTERM, then SIGKILL for the whole session
after a grace period) takes every service it started along, even when a benchmark fails midway.
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import rasterio

from geomesh.settings import TRANSFORMER_FAMILIES

UP_TIMEOUT_S = 90.0
STOP_GRACE_S = 20.0


@dataclass(frozen=True)
class Mesh:
    """A running `geomesh up`: the edge's base URL and the pid of the `up` process."""

    url: str
    pid: int


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` consecutive free ports (`geomesh up` numbers transformers and metrics ports on from a first)."""
    for _ in range(100):
        held: list[socket.socket] = []
        try:
            first = _bind(host, 0, held)
            if first is not None and first + count - 1 <= 65535 and all(
                _bind(host, first + i, held) is not None for i in range(1, count)
            ):
                return list(range(first, first + count))
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError(f"found no {count} consecutive free ports")


def _bind(host: str, port: int, held: list[socket.socket]) -> int | None:
    sock = socket.socket()
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        return None
    held.append(sock)
    return sock.getsockname()[1]


@contextmanager
def running_mesh(data_dir: Path, log_path: Path, host: str = "127.0.0.1") -> Iterator[Mesh]:
    """`geomesh up` in its own session, until it says it is up; SIGTERM (then SIGKILL) on exit."""
    edge, scheduler, catalog = free_ports(3, host)
    transformer = free_ports(len(TRANSFORMER_FAMILIES), host)[0]
    metrics = free_ports(len(TRANSFORMER_FAMILIES) + 2, host)[0]
    command = [
        sys.executable, "-m", "geomesh.cli", "up", "--host", host, "--port", str(edge),
        "--scheduler-port", str(scheduler), "--catalog-port", str(catalog),
        "--transformer-port", str(transformer), "--metrics-port", str(metrics), "--data-dir", str(data_dir),
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_up(process, log_path)
        yield Mesh(f"http://{host}:{edge}", process.pid)
    finally:
        _stop(process)


def _wait_for_up(process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + UP_TIMEOUT_S
    while b"geomesh is up" not in log_path.read_bytes():
        if process.poll() is not None:
            raise RuntimeError(f"geomesh up exited with {process.returncode}:\n{tail(log_path)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"geomesh up was not up within {UP_TIMEOUT_S:.0f} s:\n{tail(log_path)}")
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: the services it started go too
        process.wait()


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def service_cpu_seconds(mesh: Mesh) -> dict[str, float]:
    """CPU seconds (user + system, all threads) each service process has used so far, by service.

    Read from /proc/<pid>/stat of the `up` process's children (Linux only; empty elsewhere), so no
    psutil is needed. A service is named by the last word of its command line (`serve <name>`),
    a transformer by its family too (`transformer-gdal`).
    """
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    used: dict[str, float] = {}
    for pid, name in _service_names(mesh).items():
        try:
            # Fields after the command name, which is in parentheses and may hold spaces.
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        used[name] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return used


def machine() -> str:
    return (
        f"machine: {os.cpu_count()} CPUs, {platform.machine()} {platform.system()} {platform.release()}\n"
        f"python {platform.python_version()}, rasterio {rasterio.__version__}, GDAL {rasterio.__gdal_version__}, "
        f"aiohttp {aiohttp.__version__}"
    )


def service_processes(mesh: Mesh) -> dict[str, set[int]]:
    """Each service's process and every process below it (a transformer's fork server and workers),
    by service name as service_cpu_seconds names them."""
    parents: dict[int, int] = {}
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat_path.parent.name)] = int(stat_path.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    names = _service_names(mesh)
    trees: dict[str, set[int]] = {}
    for pid in parents:
        ancestor = pid
        while ancestor in parents and ancestor not in names:
            ancestor = parents[ancestor]
        if ancestor in names:
            trees.setdefault(names[ancestor], set()).add(pid)
    return trees


def _service_names(mesh: Mesh) -> dict[int, str]:
    """The `up` process's children by pid: named by the last word of their command line (`serve
    <name>`), a transformer by its family too (`transformer-gdal`)."""
    names: dict[int, str] = {}
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat_path.read_text().rsplit(")", 1)[1].split()[1]) != mesh.pid:
                continue
            name = (stat_path.parent / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")[-1].decode()
            if name == "transformer":
                environ = (stat_path.parent / "environ").read_bytes().split(b"\0")
                family = next(v for v in environ if v.startswith(b"GEOMESH_TRANSFORMER_FAMILY="))
                name += "-" + family.split(b"=", 1)[1].decode()
            names[int(stat_path.parent.name)] = name
        except (OSError, IndexError, ValueError, StopIteration):
            continue
    return names


def rss_bytes(pid: int) -> int:
    """A process's resident size (what a transformer's worker watchdog compares with its limit)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def pss_bytes(pid: int) -> int:
    """A process's proportional share of memory: pages shared with its fork siblings counted once in all."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0
