"""Benchmark: granules per second of one asynchronous job over the demo collection vs. a bare
multiprocess rasterio loop doing the same work.

What it measures
    GET /C1233800302-EEDTEST/ogc-api-coverages/1.0.0/collections/all/coverage/rangeset with no
    granule filter (all 177 granules; with --bbox also subset=lat(-45.75:-9)&subset=lon(110:156),
    which the catalog narrows to the granules that intersect it), answered by a real `geomesh up`
    with 303 -> /jobs/<id>. Timed from the submit until a POST /jobs/status poll (every 50 ms)
    says successful; then the job must list one data link per input granule and its staged files
    must hold some bytes. Against it, the floor for that work on this machine: a
    ProcessPoolExecutor with one process per core, each granule opened with rasterio, read (whole,
    or the --bbox window) and written to a temp dir by the transformer's own writer
    (transformers/gdal/formats.py, write_cog: a Cloud Optimized GeoTIFF).

Why
    A bulk job's throughput is what a Harmony user waits for. The ratio is what the job machinery
    costs: the job store and its leases, three gRPC hops, the transformer's scratch file, the copy
    into staging, the polls.

How
    The baseline runs first, before the mesh starts, so nothing else competes for the cores; its
    pool is started and warmed before timing. The mesh gets one synchronous one-granule request
    as warm-up. Each side runs --runs times; the table has the medians. The mesh's CPU seconds
    per service come from /proc/<pid>/stat (before the first and after the last measured job);
    the baseline's are the workers' own CPU time per granule.

Run: python benchmarks/job_throughput.py [--runs N] [--bbox] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from urllib.parse import unquote, urlparse

import aiohttp
import rasterio
from rasterio.windows import Window

from _mesh import Mesh, machine, running_mesh, service_cpu_seconds, tail
from bbox_crop import BBOX, COLLECTION, GRANULE_ID, pixel_window
from geomesh.model import BBox
from transformers.gdal.formats import write_cog

RANGESET = f"/{COLLECTION}/ogc-api-coverages/1.0.0/collections/all/coverage/rangeset"
BBOX_QUERY = "subset=lat(-45.75:-9)&subset=lon(110:156)"  # BBOX, as the seed notebook writes it
POLL_S = 0.05
JOB_TIMEOUT_S = 300.0


class BenchmarkError(Exception):
    """The benchmark could not measure what it should (a failed job, a missing output, ...)."""


@dataclass
class Side:
    """One row of the table: a side's runs over the same granules."""

    name: str
    granules: int
    seconds: list[float] = field(default_factory=list)
    output_bytes: int = 0  # of the last run
    cpu_seconds: float = math.nan  # over all measured runs

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def throughput(self) -> float:
        return self.granules / self.median


# ---------------------------------------------------------------------------------------------
# The granules


def granule_paths(data_dir: Path, bbox: tuple[float, float, float, float] | None) -> list[Path]:
    """The collection's local files, as catalog.json lists them; with a bbox, those that intersect it."""
    catalog = json.loads((data_dir / "catalog.json").read_text())
    collection = next(c for c in catalog["collections"] if c["id"] == COLLECTION)
    paths = []
    for granule in collection["granules"]:
        if bbox is not None and not BBox(*bbox).intersects(BBox(*granule["bbox"])):
            continue
        href = next(link["href"] for link in granule["links"] if link["href"].startswith("file://"))
        paths.append(Path(unquote(urlparse(href).path)))
    return paths


# ---------------------------------------------------------------------------------------------
# The baseline: bare rasterio in one process per core


def convert(source: Path, out_dir: Path, crop: bool) -> tuple[int, float]:
    """One granule as the transformer does it: every band, whole or cropped, written by its own
    COG writer (formats.write_cog, with PAM off as subset._write has it) straight into out_dir.
    Returns the output's size and the CPU seconds it took (process-wide, so the COG driver's
    compression threads count too)."""
    cpu = time.process_time()
    target = out_dir / source.name
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(source) as src:
        window = pixel_window(src, BBOX) if crop else Window(0, 0, src.width, src.height)
        write_cog(src, src, list(src.indexes), window, target)
    return target.stat().st_size, time.process_time() - cpu


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group: only the parent handles it, and shuts the pool down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_rasterio(paths: list[Path], runs: int, crop: bool) -> Side:
    workers = os.cpu_count() or 1
    side = Side(f"rasterio multiprocess ({workers} processes)", len(paths))
    side.cpu_seconds = 0.0
    pool = ProcessPoolExecutor(workers, initializer=_ignore_sigint)
    try:
        with tempfile.TemporaryDirectory(prefix="geomesh-bench-out-") as scratch:
            warm = Path(scratch) / "warm-up"
            warm.mkdir()
            list(pool.map(convert, paths[:workers], repeat(warm), repeat(crop)))
            for run in range(1, runs + 1):
                out_dir = Path(scratch) / f"run-{run}"
                out_dir.mkdir()
                started = time.perf_counter()
                results = list(pool.map(convert, paths, repeat(out_dir), repeat(crop)))
                side.seconds.append(time.perf_counter() - started)
                side.output_bytes = sum(size for size, _ in results)
                side.cpu_seconds += sum(cpu for _, cpu in results)
                shutil.rmtree(out_dir)
                print(f"  rasterio run {run}: {side.seconds[-1]:.2f} s", flush=True)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return side


# ---------------------------------------------------------------------------------------------
# The mesh


async def warm_up(session: aiohttp.ClientSession, base: str, query: str) -> None:
    url = f"{base}{RANGESET}?granuleid={GRANULE_ID}" + (f"&{query}" if query else "")
    async with session.get(url) as response:
        body = await response.read()
        if response.status != 200:
            raise BenchmarkError(f"warm-up answered HTTP {response.status}: {body[:300]!r}")


async def run_job(
    session: aiohttp.ClientSession, base: str, query: str, staging: Path, expected: int
) -> tuple[float, int]:
    """Submit the job, poll until it succeeds; its wall seconds and staged bytes, once verified."""
    started = time.perf_counter()
    async with session.get(f"{base}{RANGESET}" + (f"?{query}" if query else ""), allow_redirects=False) as response:
        text = await response.text()
        if response.status != 303:
            raise BenchmarkError(f"the job submit answered HTTP {response.status}, not 303: {text[:300]}")
    job_id = json.loads(text)["jobID"]
    try:
        await wait_successful(session, base, job_id, started)
    except BaseException:
        # Leave nothing running: with --data-dir the job would resume at the next start.
        with suppress(Exception):
            async with session.post(f"{base}/jobs/{job_id}/cancel", allow_redirects=False):
                pass
        raise
    seconds = time.perf_counter() - started

    async with session.get(f"{base}/jobs/{job_id}") as response:
        job = await response.json()
    links = [link for link in job["links"] if link.get("rel") == "data"]
    if job["numInputGranules"] != expected or len(links) != expected:
        raise BenchmarkError(
            f"job {job_id}: {job['numInputGranules']} input granules and {len(links)} data links, "
            f"expected {expected} of each"
        )
    job_dir = staging / job_id
    staged = sum(path.stat().st_size for path in job_dir.rglob("*") if path.is_file())
    if staged <= 0:
        raise BenchmarkError(f"job {job_id} succeeded but nothing was staged in {job_dir}")
    return seconds, staged


async def wait_successful(session: aiohttp.ClientSession, base: str, job_id: str, started: float) -> None:
    while True:
        async with session.post(f"{base}/jobs/status", json={"jobIDs": [job_id]}) as response:
            statuses = (await response.json())["jobStatuses"]
        status = statuses[0]["status"] if statuses else "not found"
        if status == "successful":
            return
        if status not in ("accepted", "running", "running_with_errors", "previewing"):
            raise BenchmarkError(f"job {job_id} ended {status}")
        if time.perf_counter() - started > JOB_TIMEOUT_S:
            raise BenchmarkError(f"job {job_id} was still {status} after {JOB_TIMEOUT_S:.0f} s")
        await asyncio.sleep(POLL_S)


async def run_mesh(mesh: Mesh, data_dir: Path, runs: int, crop: bool, expected: int) -> tuple[Side, dict[str, float]]:
    query = BBOX_QUERY if crop else ""
    side = Side("mesh (async job)", expected)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await warm_up(session, mesh.url, query)
        cpu_before = service_cpu_seconds(mesh)
        for run in range(1, runs + 1):
            seconds, side.output_bytes = await run_job(session, mesh.url, query, data_dir / "staging", expected)
            side.seconds.append(seconds)
            print(f"  mesh run {run}: {seconds:.2f} s", flush=True)
        cpu_after = service_cpu_seconds(mesh)
    used = {name: cpu_after[name] - cpu_before[name] for name in cpu_after if name in cpu_before}
    side.cpu_seconds = sum(used.values()) if used else math.nan
    return side, used


# ---------------------------------------------------------------------------------------------
# Report


def table(mesh: Side, local: Side) -> str:
    header = ("", "granules", "runs s", "median s", "granules/s", "mesh/rasterio", "output MB", "CPU ms/granule")
    rows = [header, tuple("---" for _ in header)]
    for side in (mesh, local):
        rows.append((
            side.name,
            str(side.granules),
            " ".join(f"{seconds:.2f}" for seconds in side.seconds),
            f"{side.median:.2f}",
            f"{side.throughput:.1f}",
            f"{side.throughput / local.throughput:.2f}",
            f"{side.output_bytes / 1e6:.1f}",
            f"{1000 * side.cpu_seconds / (side.granules * len(side.seconds)):.1f}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "| " + " | ".join(text.ljust(width) for text, width in zip(row, widths)) + " |" for row in rows
    )


def cpu_line(used: dict[str, float], runs: int) -> str:
    if not used:
        return "CPU seconds per mesh service: not available (no /proc)"
    parts = ", ".join(f"{name} {seconds:.1f}" for name, seconds in sorted(used.items(), key=lambda kv: -kv[1]))
    runs_text = f"{runs} run" + ("s" if runs > 1 else "")
    return f"CPU seconds per mesh service over the {runs_text} (utime+stime): {parts}; total {sum(used.values()):.1f}"


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="measured runs per side (default 3)")
    parser.add_argument("--bbox", action="store_true", help="crop to the seed's Australia bbox on both sides")
    parser.add_argument(
        "--data-dir", type=Path,
        help="reuse this data dir (demo catalog made if missing; the jobs' outputs stay in it); default: a temp dir",
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    return args


def measure(args: argparse.Namespace, data_dir: Path, log_path: Path) -> tuple[Side, Side, dict[str, float]]:
    from catalog.demo.generate import ensure_demo

    if not (data_dir / "catalog.json").exists():
        print(f"generating demo data in {data_dir} ...", flush=True)
    ensure_demo(data_dir)
    paths = granule_paths(data_dir, BBOX if args.bbox else None)
    print(f"{len(paths)} granules of {COLLECTION}" + (f", cropped to {BBOX_QUERY}" if args.bbox else ""), flush=True)
    local = run_rasterio(paths, args.runs, args.bbox)
    with running_mesh(data_dir, log_path) as mesh:
        side, used = asyncio.run(run_mesh(mesh, data_dir, args.runs, args.bbox, len(paths)))
    return side, local, used


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the mesh is stopped either way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    print(machine(), flush=True)
    with tempfile.TemporaryDirectory(prefix="geomesh-bench-") as scratch:
        data_dir = (args.data_dir or Path(scratch) / "data").resolve()
        log_path = Path(scratch) / "geomesh-up.log"
        try:
            mesh, local, used = measure(args, data_dir, log_path)
        except KeyboardInterrupt:
            print("interrupted; the mesh was stopped", file=sys.stderr)
            return 130
        except BenchmarkError as error:
            log = f"\ngeomesh up's log ends:\n{tail(log_path)}" if log_path.exists() else ""
            print(f"failed: {error}{log}", file=sys.stderr)
            return 1
    print(f"\ncores: {os.cpu_count()}; scheduler dispatch slots: "
          f"{os.environ.get('GEOMESH_SCHEDULER_DISPATCH_SLOTS', '8 (default)')}\n")
    print(table(mesh, local))
    same = "the same" if mesh.output_bytes == local.output_bytes else "DIFFERENT"
    print(f"\noutput bytes (last run): mesh {mesh.output_bytes:,}, rasterio {local.output_bytes:,} ({same})")
    print("\n" + cpu_line(used, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
