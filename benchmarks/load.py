"""Benchmark: a cheap request's latency while expensive ones pile up, and how the excess is refused.

What it measures
    A real `geomesh up` on the demo data. The cheap request is the seed's bbox crop of the global
    granule (about 460 x 370 pixels, a light worker's); the expensive one the whole granule warped to
    EPSG:6933 with bilinear resampling (a heavy worker's, about a second of CPU). First the crop alone,
    one at a time; then the same crops, from another client address (another user, to an edge without
    users), while `--clients` clients send expensive requests back to back, as fast as they are
    answered, for `--seconds`. Reported: the crop's p50/p95/max latency in both
    phases, and what the expensive requests got (200, 429, 503, other).

Why
    Under a mix of 200 concurrent requests a 16 ms crop once took 37.5 s and nothing answered 429 or
    503. The bounds now: requests in flight at the edge (GEOMESH_EDGE_MAX_REQUESTS, 256; per user or
    client address GEOMESH_EDGE_MAX_REQUESTS_PER_USER, 32), items queued per worker pool
    (GEOMESH_TRANSFORMER_MAX_QUEUED, 32), and light workers that take only small outputs, so the crop
    never waits behind a warp.

Run: python benchmarks/load.py [--clients N] [--seconds S] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

from _mesh import machine, running_mesh

RANGESET = "/C1233800302-EEDTEST/ogc-api-coverages/1.0.0/collections/all/coverage/rangeset?granuleId=G1233800343-EEDTEST"
CHEAP = RANGESET + "&subset=lat(-45.75:-9)&subset=lon(110:156)"
EXPENSIVE = RANGESET + "&outputCrs=EPSG:6933&interpolation=bilinear"


async def _timed(session: aiohttp.ClientSession, url: str) -> tuple[int, float]:
    started = time.perf_counter()
    async with session.get(url) as response:
        await response.read()
        return response.status, time.perf_counter() - started


def _line(label: str, latencies: list[float], statuses: Counter[int]) -> str:
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return (f"{label:<30} {len(ordered):>6} {statistics.median(ordered) * 1000:>9.1f} {p95 * 1000:>9.1f} "
            f"{ordered[-1] * 1000:>9.1f}  {dict(sorted(statuses.items()))}")


async def run(data_dir: Path, clients: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as logs, running_mesh(data_dir, Path(logs) / "up.log") as mesh:
        print(machine())
        timeout = aiohttp.ClientTimeout(total=300)
        # The crops come from another client address (another "user" to an edge without users).
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0)), timeout=timeout) as user:
            for _ in range(5):  # warm-up, discarded
                await _timed(user, mesh.url + CHEAP)
            alone = [await _timed(user, mesh.url + CHEAP) for _ in range(50)]
            stop = time.monotonic() + seconds
            expensive: Counter[int] = Counter()

            async def hammer() -> None:
                while time.monotonic() < stop:
                    status, _ = await _timed(session, mesh.url + EXPENSIVE)
                    expensive[status] += 1
                    if status in (429, 503):
                        await asyncio.sleep(0.2)  # a client that honours Retry-After would wait longer

            async def crops() -> list[tuple[int, float]]:
                await asyncio.sleep(1)  # let the load build up first
                found = []
                while time.monotonic() < stop:
                    found.append(await _timed(user, mesh.url + CHEAP))
                return found

            loaded, *_ = await asyncio.gather(crops(), *(hammer() for _ in range(clients)))
        print(f"\n{'':<30} {'count':>6} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}  statuses")
        print(_line("crop alone", [s for _, s in alone], Counter(status for status, _ in alone)))
        print(_line(f"crop, {clients} clients warping", [s for _, s in loaded], Counter(status for status, _ in loaded)))
        print(f"{'whole-granule warps':<30} {sum(expensive.values()):>6} {'':>29}  {dict(sorted(expensive.items()))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--data-dir", type=Path, default=Path(".data"))
    arguments = parser.parse_args()
    asyncio.run(run(arguments.data_dir, arguments.clients, arguments.seconds))


if __name__ == "__main__":
    main()
