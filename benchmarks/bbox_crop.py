"""Benchmark: the seed notebook's bbox crop through the whole mesh vs. the same crop in-process.

What it measures
    GET /C1233800302-EEDTEST/ogc-api-coverages/1.0.0/collections/all/coverage/rangeset
        ?granuleid=G1233800343-EEDTEST&subset=lat(-45.75:-9)&subset=lon(110:156)
    answered by a real `geomesh up` (edge -> scheduler -> catalog + gdal transformer, each its own
    process, on free loopback ports), against the floor for that work: rasterio in this process
    cropping the same window of the same file and writing it with the transformer's own writer
    (transformers/gdal/formats.py, write_cog: a Cloud Optimized GeoTIFF) to a scratch file.

Why
    The difference is what the mesh costs: HTTP, three gRPC hops, catalog look-ups, the
    transformer's scratch file and the relayed chunks. Both sides run at concurrency 1 (latency)
    and 8 (throughput) after a warm-up, so open datasets and GDAL's block cache are warm on both.

How
    Mesh side: one aiohttp ClientSession, a semaphore of the concurrency. In-process side: a
    ThreadPoolExecutor of the same size, each thread with its own open dataset (a dataset must not
    be shared between threads). Every mesh response must be 200 and a TIFF; once per cell one
    response is opened with rasterio and its layout (shape, dtype, compression, tiling, bounds)
    compared with the in-process output (and whether it is byte-identical is reported). A cell
    stops after --requests were sent or --max-seconds passed.

Run: python benchmarks/bbox_crop.py [--requests N] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader, MemoryFile
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds

from _mesh import machine, running_mesh
from transformers.gdal.formats import EXTENSIONS, TIFF, write_cog
from transformers.gdal.subset import _write

COLLECTION = "C1233800302-EEDTEST"
GRANULE_ID = "G1233800343-EEDTEST"
GRANULE_FILE = Path("granules") / COLLECTION / "001_00_7f00ff_global.tif"  # G1233800343's file
RANGESET = (
    f"/{COLLECTION}/ogc-api-coverages/1.0.0/collections/all/coverage/rangeset"
    f"?granuleid={GRANULE_ID}&subset=lat(-45.75:-9)&subset=lon(110:156)"
)
BBOX = (110.0, -45.75, 156.0, -9.0)  # west, south, east, north: the same subsets as the URL
WGS84 = CRS.from_epsg(4326)
CONCURRENCIES = (1, 8)

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class Outcome:
    """One request: how long it took, and its body or why it failed."""

    seconds: float
    body: bytes | None = None
    error: str | None = None


@dataclass
class Cell:
    """One row of the table: a side at a concurrency."""

    side: str
    concurrency: int
    outcomes: list[Outcome]
    wall_seconds: float
    failures: int = 0
    problems: list[str] = field(default_factory=list)
    # Whether the checked response was byte for byte the in-process GeoTIFF (None: none checked).
    identical: bool | None = None

    @property
    def requests(self) -> int:
        return len(self.outcomes)

    @property
    def latencies_ms(self) -> np.ndarray:
        return np.array([o.seconds * 1000 for o in self.outcomes if o.error is None])

    def percentile_ms(self, q: float) -> float:
        latencies = self.latencies_ms
        return float(np.percentile(latencies, q)) if latencies.size else math.nan

    @property
    def throughput(self) -> float:
        return self.requests / self.wall_seconds if self.wall_seconds > 0 else math.nan


@dataclass(frozen=True)
class Layout:
    """What must match between the mesh's GeoTIFF and the in-process one."""

    count: int
    height: int
    width: int
    dtype: str
    compression: str | None
    block_shape: tuple[int, int]
    bounds: tuple[float, float, float, float]


def layout_of(body: bytes) -> Layout:
    with MemoryFile(body) as memory, memory.open() as dataset:
        return Layout(
            count=dataset.count,
            height=dataset.height,
            width=dataset.width,
            dtype=dataset.dtypes[0],
            compression=dataset.compression.value if dataset.compression else None,
            block_shape=tuple(dataset.block_shapes[0]),
            bounds=tuple(round(value, 9) for value in dataset.bounds),
        )


def assess(cell: Cell, reference: bytes, expected: Layout) -> Cell:
    """Count failures: errors, non-TIFF bodies, and (checked once) a layout unlike the expected one."""
    checked = False
    for outcome in cell.outcomes:
        if outcome.error is None and (outcome.body is None or outcome.body[:4] not in _TIFF_MAGIC):
            outcome.error = "not a TIFF"
        if outcome.error is not None:
            cell.failures += 1
            cell.problems.append(outcome.error)
        elif not checked:
            checked = True
            cell.identical = outcome.body == reference
            try:
                got = layout_of(outcome.body)
            except RasterioError as error:
                got = None
                cell.problems.append(f"unreadable GeoTIFF: {error}")
            if got != expected:
                cell.failures += 1
                cell.problems.append(f"layout {got} != expected {expected}")
        outcome.body = None  # keep memory flat
    return cell


# ---------------------------------------------------------------------------------------------
# The in-process crop, as the transformer does it


def pixel_window(src: DatasetReader, bbox: tuple[float, float, float, float]) -> Window:
    """Whole pixels at least half inside the bbox (ties outward), clipped to the raster."""
    left, bottom, right, top = transform_bounds(WGS84, src.crs, *bbox, densify_pts=21)
    exact = from_bounds(left, bottom, right, top, src.transform)
    first_col, last_col = _span(exact.col_off, exact.col_off + exact.width, src.width)
    first_row, last_row = _span(exact.row_off, exact.row_off + exact.height, src.height)
    return Window(first_col, first_row, last_col - first_col, last_row - first_row)


def _span(start: float, stop: float, size: int) -> tuple[int, int]:
    first = max(0, math.ceil(start - 0.5 - 1e-6))
    last = min(size, math.floor(stop + 0.5 + 1e-6))
    return first, max(last, first + 1)


def crop_to_geotiff(src: DatasetReader, bbox: tuple[float, float, float, float]) -> bytes:
    """The crop's GeoTIFF bytes, as the transformer makes them (transformers/gdal/subset.py, subset()):
    the window from the bbox, every band, written by its own COG writer (formats.write_cog) through
    its own scratch-file helper (subset._write: a fresh temp file, no PAM sidecar), read back and
    removed, as the transformer streams and deletes its scratch file."""
    window = pixel_window(src, bbox)
    path = _write(src, src, list(src.indexes), window, write_cog, None, EXTENSIONS[TIFF])
    try:
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


class ThreadDatasets:
    """One open dataset per thread, opened on first use and kept open until close()."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._local = threading.local()
        self._opened: list[DatasetReader] = []
        self._lock = threading.Lock()

    def get(self) -> DatasetReader:
        dataset = getattr(self._local, "dataset", None)
        if dataset is None:
            dataset = self._local.dataset = rasterio.open(self._path)
            with self._lock:
                self._opened.append(dataset)
        return dataset

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for dataset in opened:
            dataset.close()


def run_in_process(
    executor: ThreadPoolExecutor,
    datasets: ThreadDatasets,
    work: Callable[[DatasetReader], bytes],
    concurrency: int,
    requests: int,
    max_seconds: float,
) -> tuple[list[Outcome], float]:
    """Keep `concurrency` runs of `work` in flight until `requests` were started or `max_seconds` passed."""

    def one() -> Outcome:
        started = time.perf_counter()
        try:
            body = work(datasets.get())
        except Exception as error:  # noqa: BLE001 - every failure is counted, none stops the cell
            return Outcome(time.perf_counter() - started, error=f"{type(error).__name__}: {error}")
        return Outcome(time.perf_counter() - started, body=body)

    slots = threading.BoundedSemaphore(concurrency)
    futures: list[Future[Outcome]] = []
    started = time.perf_counter()
    for _ in range(requests):
        slots.acquire()
        if time.perf_counter() - started > max_seconds:
            slots.release()
            break
        future = executor.submit(one)
        future.add_done_callback(lambda _: slots.release())
        futures.append(future)
    outcomes = [future.result() for future in futures]
    return outcomes, time.perf_counter() - started


def rasterio_cell(
    path: Path, work: Callable[[DatasetReader], bytes], concurrency: int, requests: int, warmup: int, max_seconds: float
) -> Cell:
    datasets = ThreadDatasets(path)
    executor = ThreadPoolExecutor(concurrency, thread_name_prefix="rasterio")
    try:
        run_in_process(executor, datasets, work, concurrency, max(warmup, concurrency), max_seconds)
        outcomes, wall = run_in_process(executor, datasets, work, concurrency, requests, max_seconds)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        datasets.close()
    return Cell("rasterio", concurrency, outcomes, wall)


# ---------------------------------------------------------------------------------------------
# The mesh


async def fetch(session: aiohttp.ClientSession, url: str) -> Outcome:
    """One GET, timed until the last byte of the body; anything but a 200 is a failure."""
    started = time.perf_counter()
    try:
        async with session.get(url) as response:
            body = await response.read()
            if response.status != 200:
                return Outcome(time.perf_counter() - started, error=f"HTTP {response.status}: {body[:200]!r}")
    except (aiohttp.ClientError, asyncio.TimeoutError) as error:
        return Outcome(time.perf_counter() - started, error=f"{type(error).__name__}: {error}")
    return Outcome(time.perf_counter() - started, body=body)


async def run_mesh(
    session: aiohttp.ClientSession, url: str, concurrency: int, requests: int, max_seconds: float
) -> tuple[list[Outcome], float]:
    """Keep `concurrency` requests in flight until `requests` were sent or `max_seconds` passed."""
    slots = asyncio.Semaphore(concurrency)
    outcomes: list[Outcome] = []
    in_flight: set[asyncio.Task[None]] = set()

    async def one() -> None:
        try:
            outcomes.append(await fetch(session, url))
        finally:
            slots.release()

    started = time.perf_counter()
    for _ in range(requests):
        await slots.acquire()
        if time.perf_counter() - started > max_seconds:
            slots.release()
            break
        task = asyncio.create_task(one())
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight)
    return outcomes, time.perf_counter() - started


async def mesh_cell(url: str, concurrency: int, requests: int, warmup: int, max_seconds: float) -> Cell:
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=max_seconds)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await run_mesh(session, url, concurrency, max(warmup, concurrency), max_seconds)
        outcomes, wall = await run_mesh(session, url, concurrency, requests, max_seconds)
    return Cell("mesh", concurrency, outcomes, wall)


# ---------------------------------------------------------------------------------------------
# Report


def table(cells: list[Cell]) -> str:
    header = ("", "requests", "failures", "p50 ms", "p95 ms", "p99 ms", "req/s")
    rows = [
        (
            f"{cell.side} c={cell.concurrency}",
            str(cell.requests),
            str(cell.failures),
            *(f"{cell.percentile_ms(q):.1f}" for q in (50, 95, 99)),
            f"{cell.throughput:.1f}",
        )
        for cell in cells
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(text.rjust(width) if i else text.ljust(width) for i, (text, width) in enumerate(zip(row, widths)))
        for row in (header, *rows)
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def ratios(cells: list[Cell]) -> str:
    by_key = {(cell.side, cell.concurrency): cell for cell in cells}
    lines = []
    for concurrency in CONCURRENCIES:
        mesh, local = by_key.get(("mesh", concurrency)), by_key.get(("rasterio", concurrency))
        if mesh and local:
            latency = mesh.percentile_ms(50) / local.percentile_ms(50)
            throughput = mesh.throughput / local.throughput
            lines.append(f"mesh/rasterio c={concurrency}: p50 latency x{latency:.2f}, throughput x{throughput:.2f}")
    return "\n".join(lines)


def problems(cells: list[Cell]) -> str:
    lines = []
    for cell in cells:
        distinct = sorted(set(cell.problems))
        for problem in distinct[:5]:
            lines.append(f"{cell.side} c={cell.concurrency}: {cell.problems.count(problem)}x {problem}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="measured requests per cell (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured requests before each cell (default 10)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="stop a cell after this long (default 60)")
    parser.add_argument(
        "--data-dir", type=Path, help="reuse this data dir (demo catalog made if missing); default: a temp dir"
    )
    args = parser.parse_args(argv)
    if args.requests < 1 or args.warmup < 0 or args.max_seconds <= 0:
        parser.error("--requests must be >= 1, --warmup >= 0, --max-seconds > 0")
    return args


def measure(args: argparse.Namespace, data_dir: Path, log_path: Path) -> list[Cell]:
    from catalog.demo.generate import ensure_demo

    if not (data_dir / "catalog.json").exists():
        print(f"generating demo data in {data_dir} ...", flush=True)
    ensure_demo(data_dir)
    granule = data_dir / GRANULE_FILE
    with rasterio.open(granule) as src:
        reference = crop_to_geotiff(src, BBOX)
    expected = layout_of(reference)
    print(
        f"granule: {granule} -> crop {expected.width}x{expected.height}x{expected.count} {expected.dtype}, "
        f"{len(reference)} bytes GeoTIFF\nrequest: GET {RANGESET}\n",
        flush=True,
    )
    cells: list[Cell] = []
    with running_mesh(data_dir, log_path) as up:
        for concurrency in CONCURRENCIES:
            print(f"  mesh c={concurrency} ...", flush=True)
            url = up.url + RANGESET
            mesh = asyncio.run(mesh_cell(url, concurrency, args.requests, args.warmup, args.max_seconds))
            print(f"  rasterio c={concurrency} ...", flush=True)
            local = rasterio_cell(
                granule, lambda src: crop_to_geotiff(src, BBOX), concurrency, args.requests, args.warmup, args.max_seconds
            )
            cells += [assess(mesh, reference, expected), assess(local, reference, expected)]
    return cells


def report(cells: list[Cell]) -> str:
    parts = [table(cells), ratios(cells)]
    checked = [cell.identical for cell in cells if cell.side == "mesh" and cell.identical is not None]
    if checked:
        parts.append(f"mesh output byte-identical to the in-process GeoTIFF: {'yes' if all(checked) else 'no'}")
    if any(cell.problems for cell in cells):
        parts.append("failures:\n" + problems(cells))
    return "\n\n".join(part for part in parts if part)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the mesh is stopped either way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    print(machine(), flush=True)
    with tempfile.TemporaryDirectory(prefix="geomesh-bench-") as scratch:
        data_dir = (args.data_dir or Path(scratch) / "data").resolve()
        try:
            cells = measure(args, data_dir, Path(scratch) / "geomesh-up.log")
        except KeyboardInterrupt:
            print("interrupted; the mesh was stopped", file=sys.stderr)
            return 130
    print("\n" + report(cells))
    return 1 if any(cell.failures for cell in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
