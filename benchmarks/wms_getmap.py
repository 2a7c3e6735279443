"""Benchmark: WMS 1.3.0 GetMap through the whole mesh vs. MapServer 8, side by side in one run.

What it measures
    The same two GetMap requests on the same file (the demo granule G1233800343-EEDTEST, a
    3600x1800 4-band uint8 RGBA GeoTIFF in EPSG:4326), PNG out:
      world  512x256, CRS=EPSG:4326, BBOX=-90,-180,90,180 (WMS 1.3.0: lat/lon order)
      tile   256x256, CRS=EPSG:3857, the bbox of tile z=2 x=2 y=1 (0,0 to 90E,66.5N), reprojected
    answered by a real `geomesh up` (edge -> scheduler -> catalog + gdal transformer's Render, each
    its own process; `granuleId` pins the one file), and by MapServer 8 (Debian's `mapserv`) run
    as a FastCGI application behind lighttpd, so its processes stay warm: its best case. The
    mapfile has one RASTER layer on the same file and uses MapServer's built-in `png` output
    format (AGG/PNG, IMAGEMODE RGB), the one FORMAT=image/png selects when the mapfile defines none.
    MapServer keeps the GeoTIFF open between requests (its default for a single-file layer), but
    draws even the EPSG:4326 map through its resampler, oversampling x2 by default:
    --ms-processing OVERSAMPLE_RATIO=1 shows what that costs.

Why
    MapServer is what a WMS is measured against. The ratio says what geomesh's HTTP + gRPC hops,
    catalog look-up and Python rendering cost over a C server reading the same file.

How
    Each server is started, checked (every request shape must answer 200 with a PNG of the
    asked size, decoded with rasterio) and measured on its own, the other one stopped, so they
    never compete for the cores. Per cell (server, request, concurrency): a warm-up, then
    --requests-c1 (c=1) or --requests-c8 (c=8) requests through one keep-alive aiohttp session
    with that many requests in flight, stopped early after --max-seconds. Every answer must be 200
    and a PNG. CPU seconds per process (from /proc) are read around each cell and reported per
    request, with the client's (this process) own. Both servers' images are compared pixel by
    pixel (RGB over white), to show they drew the same thing.

Everything MapServer needs (mapserver.conf, the mapfile, lighttpd.conf) is written to a temp dir;
lighttpd listens on a free loopback port and is stopped, with the mapserv processes it spawned,
at the end. `make bench-wms` installs cgi-mapserver, mapserver-bin and lighttpd when missing.

Run: python benchmarks/wms_getmap.py [--only mapserver|geomesh] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import numpy as np
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import MemoryFile

from _mesh import free_ports, machine, running_mesh, service_cpu_seconds, tail
from bbox_crop import COLLECTION, GRANULE_FILE, GRANULE_ID, Outcome, run_mesh

# Web Mercator: the world is a square of 2 * pi * 6378137 m; tile z/x/y counts from the top left.
MERCATOR_HALF = math.pi * 6378137.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CAPABILITIES = "SERVICE=WMS&VERSION=1.3.0&REQUEST=GetCapabilities"
CONCURRENCIES = (1, 8)
LIGHTTPD_UP_TIMEOUT_S = 15.0
STOP_GRACE_S = 5.0
MS_LAYER = "harmony_example_global"
PACKAGES = "cgi-mapserver mapserver-bin lighttpd"


def tile_bbox(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """An EPSG:3857 tile's extent in metres (min_x, min_y, max_x, max_y), y counted from the top."""
    size = 2 * MERCATOR_HALF / 2**z
    west, north = -MERCATOR_HALF + x * size, MERCATOR_HALF - y * size
    return (west, north - size, west + size, north)


@dataclass(frozen=True)
class Shape:
    """One GetMap request shape; BBOX as WMS 1.3.0 writes it for the CRS (EPSG:4326: lat first)."""

    name: str
    crs: str
    bbox: tuple[float, float, float, float]
    width: int
    height: int

    def query(self, layer: str, extra: dict[str, str] | None = None) -> str:
        params = {
            "SERVICE": "WMS", "VERSION": "1.3.0", "REQUEST": "GetMap", "LAYERS": layer, "STYLES": "",
            "CRS": self.crs, "BBOX": ",".join(repr(v) for v in self.bbox),
            "WIDTH": str(self.width), "HEIGHT": str(self.height), "FORMAT": "image/png",
            **(extra or {}),
        }
        return urlencode(params, safe=":,/")


SHAPES = (
    Shape("world 512x256 EPSG:4326", "EPSG:4326", (-90.0, -180.0, 90.0, 180.0), 512, 256),
    Shape("tile z2/x2/y1 256x256 EPSG:3857", "EPSG:3857", tile_bbox(2, 2, 1), 256, 256),
)


class BenchmarkError(Exception):
    """The benchmark could not measure what it should (a server missing, a wrong answer, ...)."""


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class Cell:
    """One row of the table: a server answering one request shape at one concurrency."""

    server: str
    shape: Shape
    concurrency: int
    outcomes: list[Outcome]
    wall_seconds: float
    bytes: int
    cpu_ms: dict[str, float] = field(default_factory=dict)  # per request, by process
    problems: list[str] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return len(self.problems)

    def percentile_ms(self, q: float) -> float:
        latencies = [o.seconds * 1000 for o in self.outcomes if o.error is None]
        return float(np.percentile(latencies, q)) if latencies else math.nan

    @property
    def throughput(self) -> float:
        return len(self.outcomes) / self.wall_seconds if self.wall_seconds > 0 else math.nan


@dataclass(frozen=True)
class Image:
    """A checked answer: its size in bytes, the PNG's bands, and its pixels as RGB over white."""

    bytes: int
    bands: int
    rgb: np.ndarray


def check_png(body: bytes, shape: Shape) -> Image:
    """Decode the answer with rasterio: it must be a PNG of the asked size."""
    if not body.startswith(PNG_MAGIC):
        raise BenchmarkError(f"{shape.name}: not a PNG: {body[:300]!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with MemoryFile(body) as memory, memory.open() as dataset:
                driver, data = dataset.driver, dataset.read()
    except RasterioError as error:
        raise BenchmarkError(f"{shape.name}: rasterio cannot read the PNG: {error}") from None
    if driver != "PNG" or data.shape[1:] != (shape.height, shape.width):
        raise BenchmarkError(
            f"{shape.name}: a {driver} of {data.shape[2]}x{data.shape[1]}, not a PNG of {shape.width}x{shape.height}"
        )
    return Image(len(body), data.shape[0], over_white(data))


def over_white(data: np.ndarray) -> np.ndarray:
    """RGB as a viewer shows it: grey expanded, alpha composited over white."""
    colour = data[:3] if data.shape[0] >= 3 else np.repeat(data[:1], 3, axis=0)
    if data.shape[0] in (2, 4):
        alpha = data[-1:].astype(np.float32) / 255
        return np.rint(colour * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return colour


def difference(a: Image, b: Image) -> str:
    """How far apart two renderings of the same map are."""
    delta = np.abs(a.rgb.astype(np.int16) - b.rgb.astype(np.int16)).max(axis=0)
    return f"{(delta > 16).mean():.1%} of pixels differ by more than 16 in a channel (mean |diff| {delta.mean():.1f})"


# ---------------------------------------------------------------------------------------------
# CPU seconds from /proc


def _cpu_of(pid: int, tick: int) -> tuple[int, float] | None:
    """(ppid, CPU seconds) of one process; None when it is gone or unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / tick
    except (OSError, IndexError, ValueError):
        return None


def tree_cpu_seconds(root: int) -> dict[str, float]:
    """CPU seconds of `root` and its children, summed by executable name (e.g. lighttpd, mapserv)."""
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        pid = int(stat_path.parent.name)
        got = _cpu_of(pid, tick)
        if got is None or (pid != root and got[0] != root):
            continue
        try:
            name = Path((stat_path.parent / "cmdline").read_bytes().split(b"\0")[0].decode()).name
        except OSError:
            continue
        used[name] = used.get(name, 0.0) + got[1]
    return used


def per_request_ms(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    return {name: (after[name] - before.get(name, 0.0)) * 1000 / requests for name in after} if requests else {}


# ---------------------------------------------------------------------------------------------
# MapServer behind lighttpd (FastCGI)


def find_tool(name: str) -> str | None:
    """A tool on PATH, or in the sbin folders a non-root PATH often lacks."""
    return shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")


MAPFILE = """\
MAP
  NAME "geomesh_bench"
  EXTENT -180 -90 180 90
  SIZE 512 256
  PROJECTION
    "init=epsg:4326"
  END
  WEB
    METADATA
      "wms_title" "geomesh benchmark: the harmony_example global granule"
      "wms_onlineresource" "{url}?"
      "wms_srs" "EPSG:4326 EPSG:3857 CRS:84"
      "wms_enable_request" "*"
    END
  END
  LAYER
    NAME "{layer}"
    TYPE RASTER
    STATUS ON
{processing}    DATA "{data}"
    PROJECTION
      "init=epsg:4326"
    END
    METADATA
      "wms_title" "{granule_id} (RGBA)"
    END
  END
END
"""

CONFIG = """\
CONFIG
  ENV
    MS_MAPFILE "{mapfile}"
    MS_ERRORFILE "{errors}"
  END
END
"""

LIGHTTPD_CONF = """\
server.modules = ("mod_fastcgi")
server.document-root = "{root}"
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{root}/lighttpd-error.log"
server.max-keep-alive-requests = 100000
server.max-keep-alive-idle = 60
fastcgi.server = ( "/mapserv" => ((
  "bin-path" => "{mapserv}",
  "socket" => "{root}/mapserv.sock",
  "max-procs" => {procs},
  "check-local" => "disable",
  "bin-environment" => ( "MAPSERVER_CONFIG_FILE" => "{config}" ),
)))
"""


@dataclass(frozen=True)
class MapServer:
    url: str    # the GetMap endpoint, without the query
    pid: int    # lighttpd's; the mapserv processes are its children


def mapserver_tools() -> tuple[str, str]:
    """The paths of mapserv and lighttpd, or a BenchmarkError that says how to install them."""
    mapserv, lighttpd = find_tool("mapserv"), find_tool("lighttpd")
    if mapserv is None or lighttpd is None:
        missing = " and ".join(name for name, path in (("mapserv", mapserv), ("lighttpd", lighttpd)) if path is None)
        raise BenchmarkError(
            f"{missing} not installed: run `make bench-wms` as root (it installs {PACKAGES} with apt-get), "
            f"or `apt-get install -y {PACKAGES}`; or pass --only geomesh"
        )
    return mapserv, lighttpd


@contextmanager
def running_mapserver(granule: Path, scratch: Path, procs: int, processing: list[str]) -> Iterator[MapServer]:
    """lighttpd on a free loopback port with `procs` warm mapserv FastCGI processes.

    `processing`: PROCESSING directives for the layer (none by default: MapServer as shipped).
    """
    mapserv, lighttpd = mapserver_tools()
    root = scratch / "mapserver"
    root.mkdir()
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}/mapserv"
    directives = "".join(f'    PROCESSING "{directive}"\n' for directive in processing)
    (root / "bench.map").write_text(
        MAPFILE.format(url=url, layer=MS_LAYER, processing=directives, data=granule, granule_id=GRANULE_ID)
    )
    (root / "mapserver.conf").write_text(CONFIG.format(mapfile=root / "bench.map", errors=root / "mapserver-error.log"))
    conf = root / "lighttpd.conf"
    conf.write_text(
        LIGHTTPD_CONF.format(root=root, port=port, mapserv=mapserv, procs=procs, config=root / "mapserver.conf")
    )
    log_path = root / "lighttpd.out"
    with open(log_path, "wb") as log:
        # Its own session: lighttpd leaves its FastCGI children running when it stops, so the
        # whole process group is killed afterwards.
        process = subprocess.Popen(
            [lighttpd, "-D", "-f", str(conf)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_for_mapserver(process, url, root)
        yield MapServer(url, process.pid)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def _wait_for_mapserver(process: subprocess.Popen[bytes], url: str, root: Path) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + LIGHTTPD_UP_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise BenchmarkError(f"lighttpd exited with {process.returncode}:\n{tail(root / 'lighttpd.out')}")
        try:
            with urllib.request.urlopen(f"{url}?{CAPABILITIES}", timeout=5) as answer:
                if b"WMS_Capabilities" in answer.read():
                    return
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            errors = root / "lighttpd-error.log"
            raise BenchmarkError(f"MapServer did not answer GetCapabilities within {LIGHTTPD_UP_TIMEOUT_S:.0f} s:\n"
                                 f"{tail(errors) if errors.exists() else tail(root / 'lighttpd.out')}")
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# geomesh


async def composite_layer(session: aiohttp.ClientSession, edge: str) -> str:
    """The composite (RGB) layer: the named layer of GetCapabilities that is not one variable."""
    async with session.get(f"{edge}/{COLLECTION}/wms?{CAPABILITIES}") as answer:
        text = await answer.text()
        if answer.status != 200:
            raise BenchmarkError(f"GetCapabilities: HTTP {answer.status}: {text[:500]}")
    async with session.get(f"{edge}/{COLLECTION}/ogc-api-coverages/1.0.0/collections", params={"f": "json"}) as answer:
        variables = {c.get("id") for c in (await answer.json(content_type=None)).get("collections", [])}
    layers = [el for el in ET.fromstring(text).iter() if el.tag.rpartition("}")[2] == "Layer"]
    names = [child.text or "" for layer in layers for child in layer if child.tag.rpartition("}")[2] == "Name"]
    candidates = [name for name in names if name and name not in variables]
    if not candidates:
        raise BenchmarkError(f"no composite layer among {names} (variables: {sorted(variables)}); pass --geomesh-layer")
    return candidates[0]


# ---------------------------------------------------------------------------------------------
# Measuring


async def first_answer(session: aiohttp.ClientSession, url: str, shape: Shape) -> Image:
    async with session.get(url) as answer:
        body = await answer.read()
        if answer.status != 200:
            raise BenchmarkError(f"{shape.name}: HTTP {answer.status} from {url}: {body[:500]!r}")
    return check_png(body, shape)


async def measure_server(
    server: str, url_of: dict[Shape, str], args: argparse.Namespace, cpu: Callable[[], dict[str, float]],
) -> tuple[list[Cell], dict[Shape, Image]]:
    """Check every shape's answer, then measure every (shape, concurrency) cell."""
    cells: list[Cell] = []
    images: dict[Shape, Image] = {}
    timeout = aiohttp.ClientTimeout(total=60)
    for concurrency in CONCURRENCIES:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            for shape in SHAPES:
                url = url_of[shape]
                if shape not in images:
                    images[shape] = await first_answer(session, url, shape)
                requests = args.requests_c1 if concurrency == 1 else args.requests_c8
                print(f"  {server} {shape.name} c={concurrency} ...", flush=True)
                await run_mesh(session, url, concurrency, max(args.warmup, concurrency), args.max_seconds)
                cpu_before, client_before = cpu(), time.process_time()
                outcomes, wall = await run_mesh(session, url, concurrency, requests, args.max_seconds)
                cpu_used = per_request_ms(cpu_before, cpu(), len(outcomes))
                cpu_used["client"] = (time.process_time() - client_before) * 1000 / max(len(outcomes), 1)
                cells.append(assess(Cell(server, shape, concurrency, outcomes, wall, images[shape].bytes, cpu_used)))
    return cells, images


def assess(cell: Cell) -> Cell:
    """Every answer must be a 200 with a PNG; the bodies are dropped once looked at."""
    for outcome in cell.outcomes:
        if outcome.error is None and (outcome.body is None or not outcome.body.startswith(PNG_MAGIC)):
            outcome.error = f"not a PNG: {(outcome.body or b'')[:100]!r}"
        if outcome.error is not None:
            cell.problems.append(outcome.error)
        outcome.body = None
    return cell


def measure_mapserver(args: argparse.Namespace, granule: Path, scratch: Path) -> tuple[list[Cell], dict[Shape, Image]]:
    with running_mapserver(granule, scratch, args.mapserv_procs, args.ms_processing) as ms:
        tuning = f"; PROCESSING {', '.join(args.ms_processing)}" if args.ms_processing else ""
        print(f"MapServer: {ms.url} (lighttpd pid {ms.pid}, {args.mapserv_procs} mapserv FastCGI processes{tuning})",
              flush=True)
        url_of = {shape: f"{ms.url}?{shape.query(MS_LAYER)}" for shape in SHAPES}
        return asyncio.run(measure_server("MapServer", url_of, args, lambda: tree_cpu_seconds(ms.pid)))


def measure_geomesh(args: argparse.Namespace, data_dir: Path, scratch: Path) -> tuple[list[Cell], dict[Shape, Image]]:
    log_path = scratch / "geomesh-up.log"
    with running_mesh(data_dir, log_path) as mesh:
        async def run() -> tuple[list[Cell], dict[Shape, Image]]:
            layer = args.geomesh_layer
            if layer is None:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
                    layer = await composite_layer(session, mesh.url)
            print(f"geomesh: {mesh.url}/{COLLECTION}/wms, layer {layer!r}", flush=True)
            base = f"{mesh.url}/{COLLECTION}/wms"
            url_of = {shape: f"{base}?{shape.query(layer, {'granuleId': GRANULE_ID})}" for shape in SHAPES}
            return await measure_server("geomesh", url_of, args, lambda: service_cpu_seconds(mesh))

        try:
            return asyncio.run(run())
        except BenchmarkError as error:
            raise BenchmarkError(f"{error}\n(geomesh up log:)\n{tail(log_path)}") from None


# ---------------------------------------------------------------------------------------------
# Report


def table(cells: list[Cell]) -> str:
    """One row per cell; the two servers' rows for a request and concurrency next to each other."""
    cells = sorted(cells, key=lambda cell: (SHAPES.index(cell.shape), cell.concurrency, cell.server != "geomesh"))
    header = ("server", "request", "c", "requests", "failures", "p50 ms", "p95 ms", "req/s", "bytes")
    rows = [
        (
            cell.server, cell.shape.name, str(cell.concurrency), str(len(cell.outcomes)), str(cell.failures),
            f"{cell.percentile_ms(50):.1f}", f"{cell.percentile_ms(95):.1f}", f"{cell.throughput:.1f}", str(cell.bytes),
        )
        for cell in cells
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        cells = (text.ljust(width) if i < 2 else text.rjust(width) for i, (text, width) in enumerate(zip(row, widths)))
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if i >= 2 else "-" * (w + 2) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *map(line, rows)])


def ratios(cells: list[Cell]) -> str:
    by_key = {(cell.server, cell.shape, cell.concurrency): cell for cell in cells}
    lines = []
    for shape in SHAPES:
        mesh, ms = by_key.get(("geomesh", shape, 1)), by_key.get(("MapServer", shape, 1))
        if mesh and ms:
            line = f"{shape.name}: geomesh/MapServer p50 at c=1 x{mesh.percentile_ms(50) / ms.percentile_ms(50):.2f}"
            mesh8, ms8 = by_key.get(("geomesh", shape, 8)), by_key.get(("MapServer", shape, 8))
            if mesh8 and ms8:
                line += f"; req/s at c=8 x{mesh8.throughput / ms8.throughput:.2f}"
            lines.append(line)
    return "\n".join(lines)


def cpu_lines(cells: list[Cell]) -> str:
    lines = ["CPU ms per request, by process (client: this benchmark's own aiohttp loop):"]
    for cell in cells:
        used = ", ".join(f"{name} {ms:.2f}" for name, ms in sorted(cell.cpu_ms.items(), key=lambda kv: -kv[1]))
        total = sum(ms for name, ms in cell.cpu_ms.items() if name != "client")
        lines.append(f"  {cell.server} {cell.shape.name} c={cell.concurrency}: server total {total:.2f} ({used})")
    return "\n".join(lines)


def image_lines(images: dict[str, dict[Shape, Image]]) -> str:
    lines = []
    for shape in SHAPES:
        got = {server: shown[shape] for server, shown in images.items() if shape in shown}
        kinds = ", ".join(f"{server} {image.bands}-band PNG {image.bytes} bytes" for server, image in got.items())
        line = f"{shape.name}: {kinds}"
        if len(got) == 2:
            line += f"; {difference(*got.values())}"
        lines.append(line)
    return "\n".join(lines)


def problems(cells: list[Cell]) -> str:
    lines = []
    for cell in cells:
        for problem in sorted(set(cell.problems))[:5]:
            count = cell.problems.count(problem)
            lines.append(f"{cell.server} {cell.shape.name} c={cell.concurrency}: {count}x {problem}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("mapserver", "geomesh"), help="measure one server only")
    parser.add_argument("--requests-c1", type=int, default=300, help="measured requests per cell at c=1 (default 300)")
    parser.add_argument("--requests-c8", type=int, default=800, help="measured requests per cell at c=8 (default 800)")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured requests before each cell (default 20)")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="stop a cell after this long (default 10)")
    parser.add_argument("--mapserv-procs", type=int, default=os.cpu_count() or 2,
                        help="mapserv FastCGI processes (default: one per CPU)")
    parser.add_argument("--ms-processing", action="append", default=[], metavar="KEY=VALUE",
                        help="a PROCESSING directive for MapServer's layer, e.g. OVERSAMPLE_RATIO=1 (repeatable)")
    parser.add_argument("--geomesh-layer", help="geomesh's layer (default: the composite layer of GetCapabilities)")
    parser.add_argument("--data-dir", type=Path,
                        help="reuse this data dir (demo catalog made if missing); default: a temp dir")
    args = parser.parse_args(argv)
    if min(args.requests_c1, args.requests_c8, args.mapserv_procs) < 1 or args.warmup < 0 or args.max_seconds <= 0:
        parser.error("--requests-c1/-c8 and --mapserv-procs must be >= 1, --warmup >= 0, --max-seconds > 0")
    return args


def measure(
    args: argparse.Namespace, data_dir: Path, scratch: Path
) -> tuple[list[Cell], dict[str, dict[Shape, Image]]]:
    from catalog.demo.generate import ensure_demo

    if args.only != "geomesh":
        mapserver_tools()  # before the minutes of demo data, if it cannot run anyway
    if not (data_dir / "catalog.json").exists():
        print(f"generating demo data in {data_dir} ...", flush=True)
    ensure_demo(data_dir)
    granule = data_dir / GRANULE_FILE
    for shape in SHAPES:
        print(f"{shape.name}: {shape.query('<layer>')}", flush=True)
    cells: list[Cell] = []
    images: dict[str, dict[Shape, Image]] = {}
    if args.only in (None, "mapserver"):
        got, images["MapServer"] = measure_mapserver(args, granule, scratch)
        cells += got
    if args.only in (None, "geomesh"):
        got, images["geomesh"] = measure_geomesh(args, data_dir, scratch)
        cells += got
    return cells, images


def load() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine skews every number here."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the servers are stopped either way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    print(machine(), flush=True)
    print(f"load average at start: {load()}", flush=True)
    mapserv = find_tool("mapserv")
    if mapserv and args.only != "geomesh":
        version = subprocess.run([mapserv, "-v"], capture_output=True, text=True).stdout.split(" OUTPUT=")[0]
        print(version.strip(), flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="geomesh-bench-wms-") as scratch:
        data_dir = (args.data_dir or Path(scratch) / "data").resolve()
        try:
            cells, images = measure(args, data_dir, Path(scratch))
        except BenchmarkError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted; the servers were stopped", file=sys.stderr)
            return 130
    parts = [table(cells), ratios(cells), image_lines(images), cpu_lines(cells)]
    if any(cell.problems for cell in cells):
        parts.append("failures:\n" + problems(cells))
    parts.append(f"total run time {time.monotonic() - started:.0f} s; load average at the end: {load()}")
    print("\n" + "\n\n".join(part for part in parts if part))
    return 1 if any(cell.failures for cell in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
