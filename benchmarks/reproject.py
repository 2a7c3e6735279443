"""Benchmark: reprojection to EPSG:6933 through the whole mesh vs. the same warp with rasterio in-process.

What it measures
    Two rangeset requests on the seed's global granule (G1233800343-EEDTEST, 3600x1800 4-band
    uint8 in EPSG:4326), GeoTIFF out:
      bbox + reproject  the seed's crop (lat -45.75..-9, lon 110..156) warped to EPSG:6933
      whole granule     the whole granule warped to EPSG:6933
    answered by a real `geomesh up` (edge -> scheduler -> catalog + gdal transformer, each its own
    process), against rasterio in this process doing the warp the way gdalwarp would by default:
    the pixel window of the bbox, calculate_default_transform for the output grid, a WarpedVRT
    (nearest), written by the transformer's own writer (transformers/gdal/formats.py write_cog)
    so that both sides produce the same Cloud Optimized GeoTIFF.

Why
    Reprojection is the costliest thing the seed asks of the gdal transformer; the ratio says what
    the mesh adds (HTTP, gRPC hops, scratch file, relayed chunks) on top of the warp itself, at
    concurrency 1 (latency) and 8 (throughput).

How
    As benchmarks/bbox_crop.py (whose measuring code this reuses): a warm-up, then --requests per
    cell or --max-seconds, whichever first. Once per cell a mesh response is opened and its layout
    (size, bands, dtype, compression, tiling, bounds) compared with the in-process output: a
    different grid counts as a failure, since it would mean the two did different work.

Run: python benchmarks/reproject.py [--requests N] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds

from _mesh import machine, running_mesh
from bbox_crop import (
    BBOX,
    COLLECTION,
    CONCURRENCIES,
    GRANULE_FILE,
    GRANULE_ID,
    Cell,
    assess,
    layout_of,
    mesh_cell,
    pixel_window,
    problems,
    rasterio_cell,
    ratios,
    table,
)
from transformers.gdal.formats import EXTENSIONS, TIFF, write_cog
from transformers.gdal.subset import _write

TARGET = CRS.from_epsg(6933)
_RANGESET = f"/{COLLECTION}/ogc-api-coverages/1.0.0/collections/all/coverage/rangeset?granuleid={GRANULE_ID}"
# name -> (the mesh's request, the bbox the in-process side crops to first, or None for all)
CASES: dict[str, tuple[str, tuple[float, float, float, float] | None]] = {
    "bbox + EPSG:6933": (f"{_RANGESET}&subset=lat(-45.75:-9)&subset=lon(110:156)&outputCrs=EPSG:6933", BBOX),
    "whole granule -> EPSG:6933": (f"{_RANGESET}&outputCrs=EPSG:6933", None),
}


def warp_to_geotiff(src: DatasetReader, bbox: tuple[float, float, float, float] | None) -> bytes:
    """The window of the bbox warped to EPSG:6933 on gdalwarp's default grid, as a COG's bytes."""
    window = pixel_window(src, bbox) if bbox else Window(0, 0, src.width, src.height)
    transform, width, height = calculate_default_transform(
        src.crs, TARGET, int(window.width), int(window.height), *window_bounds(window, src.transform)
    )
    with WarpedVRT(
        src, crs=TARGET, transform=transform, width=width, height=height, resampling=Resampling.nearest
    ) as vrt:
        path = _write(vrt, src, list(src.indexes), Window(0, 0, width, height), write_cog, None, EXTENSIONS[TIFF])
    try:
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100, help="measured requests per cell (default 100)")
    parser.add_argument("--warmup", type=int, default=4, help="unmeasured requests before each cell (default 4)")
    parser.add_argument("--max-seconds", type=float, default=15.0, help="stop a cell after this long (default 15)")
    parser.add_argument(
        "--data-dir", type=Path, help="reuse this data dir (demo catalog made if missing); default: a temp dir"
    )
    args = parser.parse_args(argv)
    if args.requests < 1 or args.warmup < 0 or args.max_seconds <= 0:
        parser.error("--requests must be >= 1, --warmup >= 0, --max-seconds > 0")
    return args


def measure(args: argparse.Namespace, data_dir: Path, log_path: Path) -> dict[str, list[Cell]]:
    from catalog.demo.generate import ensure_demo

    if not (data_dir / "catalog.json").exists():
        print(f"generating demo data in {data_dir} ...", flush=True)
    ensure_demo(data_dir)
    granule = data_dir / GRANULE_FILE
    results: dict[str, list[Cell]] = {}
    with running_mesh(data_dir, log_path) as up:
        for name, (rangeset, bbox) in CASES.items():
            work: Callable[[DatasetReader], bytes] = lambda src, bbox=bbox: warp_to_geotiff(src, bbox)  # noqa: E731
            with rasterio.open(granule) as src:
                reference = work(src)
            expected = layout_of(reference)
            print(f"{name}: GET {rangeset}\n  -> {expected.width}x{expected.height}x{expected.count}, "
                  f"{len(reference)} bytes", flush=True)
            cells = []
            for concurrency in CONCURRENCIES:
                mesh = asyncio.run(
                    mesh_cell(up.url + rangeset, concurrency, args.requests, args.warmup, args.max_seconds)
                )
                local = rasterio_cell(granule, work, concurrency, args.requests, args.warmup, args.max_seconds)
                cells += [assess(mesh, reference, expected), assess(local, reference, expected)]
            results[name] = cells
    return results


def report(results: dict[str, list[Cell]]) -> str:
    parts = []
    for name, cells in results.items():
        lines = [f"## {name}", table(cells), ratios(cells)]
        identical = [cell.identical for cell in cells if cell.side == "mesh" and cell.identical is not None]
        if identical:
            lines.append(f"mesh output byte-identical to the in-process GeoTIFF: {'yes' if all(identical) else 'no'}")
        if any(cell.problems for cell in cells):
            lines.append("failures:\n" + problems(cells))
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the mesh is stopped either way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    print(machine(), flush=True)
    with tempfile.TemporaryDirectory(prefix="geomesh-bench-") as scratch:
        data_dir = (args.data_dir or Path(scratch) / "data").resolve()
        try:
            results = measure(args, data_dir, Path(scratch) / "geomesh-up.log")
        except KeyboardInterrupt:
            print("interrupted; the mesh was stopped", file=sys.stderr)
            return 130
    print("\n" + report(results))
    return 1 if any(cell.failures for cells in results.values() for cell in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
