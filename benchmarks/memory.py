"""Benchmark: peak memory of every service for the largest request allowed, alone and four at once.

What it measures
    A real `geomesh up` on the demo data. The largest rangeset request the gdal transformer admits
    (GEOMESH_TRANSFORMER_MAX_OUTPUT_BYTES, 512 MiB of output in memory by default): the global granule
    G1233800343-EEDTEST (3600 x 1800, 4 bands of bytes) regridded onto a grid just under the limit,
    as a GeoTIFF and as a JPEG; then four of them at once; then one just over the limit, which must be
    refused (413) before any pixel is read. The resident memory of each service (its process and
    every process below it: a transformer's fork server and workers) is sampled every 50 ms, as PSS
    (pages the workers share with their fork server counted once), and the largest single process
    as RSS (what a worker's watchdog compares with worker_memory_bytes).

Why
    One JPEG of the largest size the edge accepted took a transformer to 5.7 GB, and nothing bounded
    how many ran at once. The bounds now: an output's size in memory (max_output_bytes), each worker's
    resident size (worker_memory_bytes, 3 GiB: killed above it, the request a 413), and the number of
    workers (2 light + 2 heavy per family). This shows what the largest allowed request really takes.

Run: python benchmarks/memory.py [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from pathlib import Path

import aiohttp

from _mesh import machine, pss_bytes, rss_bytes, running_mesh, service_processes

RANGESET = "/C1233800302-EEDTEST/ogc-api-coverages/1.0.0/collections/all/coverage/rangeset"
GRANULE = "G1233800343-EEDTEST"
LIMIT_BYTES = 512 * 1024**2
PLANES = 5  # four bands and the alpha a warp adds


def _grid(pixels: int) -> tuple[int, int]:
    height = int((pixels / 2) ** 0.5)
    return 2 * height, height


class Sampler:
    """Peak resident memory per service (its whole process tree) while running."""

    def __init__(self, mesh: object) -> None:
        self.mesh, self.peaks, self.worker_peak = mesh, {}, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pids in service_processes(self.mesh).items():  # type: ignore[arg-type]
                self.peaks[name] = max(self.peaks.get(name, 0), sum(pss_bytes(pid) for pid in pids))
                if name.startswith("transformer"):
                    self.worker_peak = max(self.worker_peak, max((rss_bytes(pid) for pid in pids), default=0))
            time.sleep(0.05)


async def _get(session: aiohttp.ClientSession, base: str, query: str) -> tuple[int, int, float]:
    started = time.perf_counter()
    async with session.get(f"{base}{RANGESET}?granuleId={GRANULE}&{query}") as response:
        size = 0
        async for chunk in response.content.iter_chunked(1 << 20):
            size += len(chunk)
        return response.status, size, time.perf_counter() - started


async def run(data_dir: Path) -> None:
    width, height = _grid(LIMIT_BYTES // PLANES - 1_000_000)
    over_width, over_height = _grid(LIMIT_BYTES // PLANES + 2_000_000)
    cases = [
        ("largest allowed GeoTIFF", 1, f"outputCrs=EPSG:4326&width={width}&height={height}&format=image/tiff"),
        ("largest allowed JPEG", 1, f"outputCrs=EPSG:4326&width={width}&height={height}&format=image/jpeg"),
        ("four largest GeoTIFFs at once", 4, f"outputCrs=EPSG:4326&width={width}&height={height}&format=image/tiff"),
        ("just over the limit (JPEG)", 1, f"outputCrs=EPSG:4326&width={over_width}&height={over_height}&format=image/jpeg"),
    ]
    with tempfile.TemporaryDirectory() as logs, running_mesh(data_dir, Path(logs) / "up.log") as mesh:
        print(machine())
        timeout = aiohttp.ClientTimeout(total=900)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            with Sampler(mesh) as idle:
                await asyncio.sleep(1)
            print(f"\nidle: {', '.join(f'{n} {b >> 20} MiB' for n, b in sorted(idle.peaks.items()))}")
            print(f"\n{'request':<34} {'grid':>12} {'status':>8} {'seconds':>8} {'output MB':>10} "
                  f"{'transformer-gdal':>17} {'largest process':>16} {'scheduler':>10} {'edge':>8}")
            for label, count, query in cases:
                with Sampler(mesh) as sampler:
                    results = await asyncio.gather(*(_get(session, mesh.url, query) for _ in range(count)))
                grid = query.split("width=")[1].split("&")[0] + " x " + query.split("height=")[1].split("&")[0]
                statuses = "/".join(sorted({str(status) for status, _, _ in results}))
                seconds = max(s for _, _, s in results)
                size = max(n for _, n, _ in results) / 1e6
                print(f"{label:<34} {grid:>12} {statuses:>8} {seconds:>8.1f} {size:>10.1f} "
                      f"{sampler.peaks.get('transformer-gdal', 0) >> 20:>13} MiB {sampler.worker_peak >> 20:>12} MiB "
                      f"{sampler.peaks.get('scheduler', 0) >> 20:>6} MiB {sampler.peaks.get('edge', 0) >> 20:>2} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path(".data"))
    asyncio.run(run(parser.parse_args().data_dir))


if __name__ == "__main__":
    main()
