"""The README's seed requests ("Try the seed notebook's requests", an asynchronous job, WMS) against
an edge, checking each answer's status and that every raster output opens with rasterio.

    python deploy/docker/e2e_requests.py http://127.0.0.1:3000 OUTPUT_DIR [--job-seconds 120]

Prints one line per check; exits 1 at the first that fails. e2e.sh runs it against the mesh's
containers; it needs only requests and rasterio (the project's own dependencies).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import rasterio
import requests
from rasterio.errors import NotGeoreferencedWarning

HARMONY_EXAMPLE = "C1233800302-EEDTEST"
V2 = "C1234088182-EEDTEST"
L2 = "C1233860183-EEDTEST"
GLOBAL = "G1233800343-EEDTEST"
EASE_GRID = "+proj=cea +lon_0=0 +lat_ts=30 +x_0=0 +y_0=0 +ellps=WGS84 +towgs84=0,0,0,0,0,0,0 +units=m +no_defs"
TIMEOUT = 120


class Failed(AssertionError):
    pass


class Seed:
    def __init__(self, url: str, out: Path) -> None:
        self.url, self.out = url.rstrip("/"), out
        self.session = requests.Session()
        self.passed = 0

    def coverages(self, collection: str = HARMONY_EXAMPLE) -> str:
        return f"{self.url}/{collection}/ogc-api-coverages/1.0.0"

    def check(self, what: str, method: str, url: str, status: int = 200, **options: Any) -> requests.Response:
        options.setdefault("allow_redirects", False)
        started = time.monotonic()
        response = self.session.request(method, url, timeout=TIMEOUT, **options)
        if response.status_code != status:
            raise Failed(f"{what}: {method} {url} answered {response.status_code}, not {status}: {response.text[:500]}")
        print(f"ok   {what}: {response.status_code} {response.headers.get('Content-Type', '')} "
              f"{len(response.content)} bytes in {time.monotonic() - started:.2f} s", flush=True)
        self.passed += 1
        return response

    def raster(self, what: str, name: str, response: requests.Response, test: Callable[[Any], object]) -> None:
        """Saves an output and opens it with rasterio; `test` must hold of the dataset."""
        path = self.out / name
        path.write_bytes(response.content)
        with rasterio.open(path) as dataset:
            summary = f"{dataset.driver} {dataset.width}x{dataset.height}x{dataset.count} {dataset.crs}"
            if not test(dataset):
                raise Failed(f"{what}: {name} opened as {summary}, which is not what was asked")
        print(f"ok   {what}: {name} opens with rasterio: {summary}", flush=True)
        self.passed += 1


def rangeset(seed: Seed, collection: str = HARMONY_EXAMPLE, variable: str = "all") -> str:
    return f"{seed.coverages(collection)}/collections/{variable}/coverage/rangeset"


def synchronous(seed: Seed) -> None:
    root = seed.coverages()
    seed.check("landing page", "GET", f"{root}/")
    seed.check("OpenAPI", "GET", f"{root}/api")
    seed.check("conformance", "GET", f"{root}/conformance")
    seed.check("collections", "GET", f"{root}/collections")

    blue = seed.check("variable subset", "GET", f"{rangeset(seed, variable='blue_var')}?granuleid={GLOBAL}")
    seed.raster("variable subset", "blue.tif", blue, lambda d: d.count == 1 and d.driver == "GTiff")
    bbox = seed.check("bbox subset", "GET", f"{rangeset(seed)}?granuleid={GLOBAL}&subset=lat(-45.75:-9)&subset=lon(110:156)")
    seed.raster(
        "bbox subset", "bbox.tif", bbox,
        lambda d: d.count == 4 and 109 <= d.bounds.left < d.bounds.right <= 157 and -47 <= d.bounds.bottom < d.bounds.top <= -8,
    )
    when = quote('"2020-01-16T02:00:00.000Z":"2020-01-16T03:00:00.000Z"')
    png = seed.check("time range as PNG", "GET", f"{rangeset(seed)}?subset=time({when})&format=image/png")
    seed.raster("time range as PNG", "africa.png", png, lambda d: d.driver == "PNG")
    posted = seed.check(
        "POST multipart", "POST", rangeset(seed, variable="parameter_vars"),
        files=[("granuleId", (None, GLOBAL)), ("variable", (None, "red_var")), ("variable", (None, "blue_var"))],
    )
    seed.raster("POST multipart", "rb.tif", posted, lambda d: d.count == 2)
    ease = seed.check("reprojection", "GET", f"{rangeset(seed)}?granuleid={GLOBAL}&outputCrs=EPSG:6933")
    seed.raster("reprojection", "ease.tif", ease, lambda d: d.crs is not None and d.crs.to_epsg() == 6933)

    au = seed.check(
        "NetCDF bbox subset", "GET",
        f"{rangeset(seed, V2, 'red_var,blue_var')}?granuleId=G1234088191-EEDTEST&subset=lat(-45.75:-9)&subset=lon(110:156)",
    )
    seed.raster(
        "NetCDF bbox subset", "au.nc4", au,
        lambda d: {name.rsplit(":", 1)[-1] for name in d.subdatasets} >= {"red_var", "blue_var"},
    )
    v2_ease = seed.check(
        "NetCDF reprojected to a COG", "GET", f"{rangeset(seed, V2)}?granuleId=G1234088191-EEDTEST&outputCrs=EPSG:6933&format=image/tiff"
    )
    seed.raster("NetCDF reprojected to a COG", "v2_ease.tif", v2_ease, lambda d: d.crs is not None and d.crs.to_epsg() == 6933)
    swath = seed.check(
        "L2 swath regridded", "GET",
        f"{rangeset(seed, L2)}?granuleid=G1233860486-EEDTEST&outputCrs={quote(EASE_GRID)}&interpolation=near"
        "&scaleExtent=-7000000,1000000,8000000,8000000&format=image/tiff",
    )
    seed.raster("L2 swath regridded", "regrid.tif", swath, lambda d: d.crs is not None and "cea" in d.crs.to_proj4())

    atl08 = f"{seed.url}/data/granules/C1229246405-NSIDC_TS1/ATL08_20181014044639_02380101_002_01.h5"
    part = seed.check("ATL08 download resumed", "GET", atl08, 206, headers={"Range": "bytes=1-"})
    if part.content[:3] != b"HDF":  # the file's signature is \x89HDF
        raise Failed(f"ATL08 download: not an HDF5 file from byte 1: {part.content[:8]!r}")


def asynchronous(seed: Seed, seconds: float) -> None:
    created = seed.check("job created (303)", "GET", f"{rangeset(seed)}?maxResults=2", 303)
    job_url = created.headers["Location"]
    job_id = job_url.rsplit("/", 1)[1]
    deadline = time.monotonic() + seconds
    while True:
        job = seed.session.get(job_url, timeout=TIMEOUT).json()
        if job["status"] == "successful":
            break
        if job["status"] in ("failed", "canceled") or time.monotonic() > deadline:
            raise Failed(f"job {job_id}: {job['status']} after {seconds} s at most: {job.get('message')} {job.get('errors', '')}")
        time.sleep(0.25)
    print(f"ok   job {job_id}: {job['status']}, progress {job['progress']}, {job['numInputGranules']} granules", flush=True)
    seed.passed += 1
    data = [link for link in job["links"] if link["rel"] == "data"]
    if len(data) != 2:
        raise Failed(f"job {job_id}: {len(data)} data links, not 2: {data}")
    for link in data:
        output = seed.check(f"job output {link['title']}", "GET", link["href"])
        seed.raster(f"job output {link['title']}", link["title"], output, lambda d: d.count == 4)
    seed.check("job's STAC catalog", "GET", f"{seed.url}/stac/{job_id}/")


def wms(seed: Seed) -> None:
    wms = f"{seed.url}/{HARMONY_EXAMPLE}/wms"
    capabilities = seed.check("WMS GetCapabilities", "GET", f"{wms}?SERVICE=WMS&REQUEST=GetCapabilities&VERSION=1.3.0")
    if b"WMS_Capabilities" not in capabilities.content:
        raise Failed("WMS GetCapabilities: no WMS_Capabilities document")
    world = seed.check(
        "WMS GetMap", "GET",
        f"{wms}?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap&LAYERS={HARMONY_EXAMPLE}&STYLES=&CRS=EPSG:4326"
        "&BBOX=-90,-180,90,180&WIDTH=1024&HEIGHT=512&FORMAT=image/png&TRANSPARENT=TRUE",
    )
    seed.raster("WMS GetMap", "world.png", world, lambda d: (d.driver, d.width, d.height) == ("PNG", 1024, 512))
    tile = seed.check(
        "WMS GetMap (EPSG:3857, TIME)", "GET",
        f"{wms}?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap&LAYERS=blue_var&STYLES=&CRS=EPSG:3857"
        "&BBOX=0,0,10018754.17,10018754.17&WIDTH=256&HEIGHT=256&FORMAT=image/png&TIME=2020-01-16T02:00:00Z",
    )
    seed.raster("WMS GetMap (EPSG:3857, TIME)", "tile.png", tile, lambda d: (d.width, d.height) == (256, 256))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("url")
    parser.add_argument("out", type=Path)
    parser.add_argument("--job-seconds", type=float, default=120.0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore", NotGeoreferencedWarning)  # the synchronous PNG and WMS maps carry no geotransform
    seed = Seed(args.url, args.out)
    started = time.monotonic()
    try:
        health = seed.check("health", "GET", f"{seed.url}/health")
        print(f"     {health.json()['message']}", flush=True)
        synchronous(seed)
        asynchronous(seed, args.job_seconds)
        wms(seed)
    except (Failed, requests.RequestException, rasterio.errors.RasterioError, KeyError, ValueError) as error:
        print(f"FAIL {error}", file=sys.stderr, flush=True)
        print(f"{seed.passed} passed, 1 failed", flush=True)
        return 1
    print(f"{seed.passed} passed, 0 failed in {time.monotonic() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
