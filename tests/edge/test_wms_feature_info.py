"""WMS 1.3.0 GetFeatureInfo through a real mesh, as OWSLib (and QGIS' identify tool) ask for it.

The values expected are read here independently, with rasterio, from the demo granule files: the
newest granules whose pixel at the point is not transparent (alpha 0 is no data, so a point over
the sea, where every demo granule is transparent, answers no features).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC
from urllib.parse import urlencode

import pyproj
import pytest
import rasterio
from owslib.wms import WebMapService

from catalog.demo.generate import BAND_NAMES, granule_path, load_granules
from tests.conftest import ATL08, HARMONY_EXAMPLE, Mesh
from tests.edge.test_coverages import get
from tests.edge.test_wms import LAYERS, MERCATOR, assert_exception, wms_url

RGB = ["red_var", "green_var", "blue_var"]


def expected(mesh: Mesh, lon: float, lat: float, count: int, time_start: str | None = None) -> list[tuple[str, dict[str, int]]]:
    """(granule id, band values) of the newest `count` demo granules with data at the point, read from their files."""
    found: list[tuple[str, dict[str, int]]] = []
    for granule in sorted(load_granules(), key=lambda g: (g.time_start, g.name), reverse=True):
        if time_start is not None and granule.time_start.astimezone(UTC).isoformat().replace("+00:00", "Z") != time_start:
            continue
        west, south, east, north = granule.bbox
        if not (west <= lon < east and south <= lat < north) or granule.name.endswith("_poly"):
            continue
        with rasterio.open(granule_path(mesh.data_dir, granule)) as dataset:
            row, col = dataset.index(lon, lat)
            pixel = dataset.read(window=((row, row + 1), (col, col + 1)))[:, 0, 0]
        if pixel[3] == 0:
            continue
        found.append((granule.id, {name: int(value) for name, value in zip(BAND_NAMES, pixel, strict=True)}))
        if len(found) == count:
            break
    return found


def owslib_info(mesh: Mesh, layer: str, crs: str, bbox: tuple[float, ...], size: tuple[int, int], xy: tuple[int, int],
                info_format: str = "application/json", **extra: object) -> bytes:
    extra.setdefault("feature_count", 1)  # OWSLib's default is 20
    service = WebMapService(wms_url(mesh), version="1.3.0")
    answer = service.getfeatureinfo(layers=[layer], styles=[""], srs=crs, bbox=bbox, size=size, format="image/png",
                                    query_layers=[layer], xy=xy, info_format=info_format, **extra)
    assert answer.info()["Content-Type"].startswith(info_format)
    return answer.read()


def centre(bbox: tuple[float, ...], size: tuple[int, int], i: int, j: int) -> tuple[float, float]:
    """The x, y of pixel (i, j)'s centre in a map of bbox (x first)."""
    min_x, min_y, max_x, max_y = bbox
    return min_x + (i + 0.5) * (max_x - min_x) / size[0], max_y - (j + 0.5) * (max_y - min_y) / size[1]


def values_of(collection: dict) -> list[tuple[str, dict[str, int]]]:
    return [(feature["id"], feature["properties"]["values"]) for feature in collection["features"]]


# A map of Africa in CRS:84 whose pixel (128, 64) has its centre at lon 20.04, lat 4.98: land.
AFRICA_BOX, AFRICA_SIZE, AFRICA_PIXEL = (10.0, -5.0, 30.0, 15.0), (256, 256), (128, 128)


async def test_owslib_gets_the_composite_values_at_a_land_point(mesh: Mesh) -> None:
    started = time.perf_counter()
    body = await asyncio.to_thread(owslib_info, mesh, HARMONY_EXAMPLE, "CRS:84", AFRICA_BOX, AFRICA_SIZE, AFRICA_PIXEL)
    elapsed = time.perf_counter() - started
    collection = json.loads(body)
    lon, lat = centre(AFRICA_BOX, AFRICA_SIZE, *AFRICA_PIXEL)
    want = expected(mesh, lon, lat, 1)
    assert len(want) == 1 and want[0][1]["red_var"] > 0
    assert values_of(collection) == [(want[0][0], {name: want[0][1][name] for name in RGB})]
    feature = collection["features"][0]
    assert feature["geometry"]["coordinates"] == pytest.approx([lon, lat])
    assert feature["properties"]["layer"] == HARMONY_EXAMPLE
    assert feature["properties"]["time_start"] == "2020-01-16T02:00:00Z"  # the newest granule there: Africa, 16 January
    print(f"GetFeatureInfo through the mesh (OWSLib, capabilities included): {elapsed * 1000:.0f} ms")


async def test_feature_count_reports_older_granules_newest_first(mesh: Mesh) -> None:
    body = await asyncio.to_thread(owslib_info, mesh, "red_var", "CRS:84", AFRICA_BOX, AFRICA_SIZE, AFRICA_PIXEL, feature_count=3)
    lon, lat = centre(AFRICA_BOX, AFRICA_SIZE, *AFRICA_PIXEL)
    want = expected(mesh, lon, lat, 3)
    assert values_of(json.loads(body)) == [(granule, {"red_var": bands["red_var"]}) for granule, bands in want]


async def test_a_point_over_the_sea_has_no_features(mesh: Mesh) -> None:
    # The Pacific: every granule there is transparent (alpha 0, its bands 0), which is no data.
    box, size = (-150.0, -10.0, -130.0, 10.0), (100, 100)
    collection = json.loads(await asyncio.to_thread(owslib_info, mesh, HARMONY_EXAMPLE, "CRS:84", box, size, (50, 50)))
    assert collection == {"type": "FeatureCollection", "features": []}
    text = await asyncio.to_thread(owslib_info, mesh, HARMONY_EXAMPLE, "CRS:84", box, size, (50, 50), "text/plain")
    assert b"no data at this point" in text


async def test_epsg_3857_and_epsg_4326_points(mesh: Mesh) -> None:
    box, size, pixel = (0.0, 0.0, MERCATOR / 2, MERCATOR / 2), (256, 256), (57, 241)
    body = await asyncio.to_thread(owslib_info, mesh, "green_var", "EPSG:3857", box, size, pixel)
    lon, lat = pyproj.Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True).transform(*centre(box, size, *pixel))
    want = expected(mesh, lon, lat, 1)
    assert want and values_of(json.loads(body)) == [(want[0][0], {"green_var": want[0][1]["green_var"]})]
    # EPSG:4326 (OWSLib writes the BBOX latitude first) with TIME: the 1 January global granule only.
    body = await asyncio.to_thread(owslib_info, mesh, "blue_var", "EPSG:4326", AFRICA_BOX, AFRICA_SIZE, AFRICA_PIXEL,
                                   time="2020-01-01T00:00:00Z")
    lon, lat = centre(AFRICA_BOX, AFRICA_SIZE, *AFRICA_PIXEL)
    want = expected(mesh, lon, lat, 1, time_start="2020-01-01T00:00:00Z")
    assert values_of(json.loads(body)) == [(want[0][0], {"blue_var": want[0][1]["blue_var"]})]


async def test_text_and_html_answers(mesh: Mesh) -> None:
    text = (await asyncio.to_thread(owslib_info, mesh, "red_var", "CRS:84", AFRICA_BOX, AFRICA_SIZE, AFRICA_PIXEL, "text/plain")).decode()
    [(granule, bands)] = expected(mesh, *centre(AFRICA_BOX, AFRICA_SIZE, *AFRICA_PIXEL), 1)
    assert f"granule {granule}" in text and f"red_var = {bands['red_var']}" in text
    page = (await asyncio.to_thread(owslib_info, mesh, "red_var", "CRS:84", AFRICA_BOX, AFRICA_SIZE, AFRICA_PIXEL, "text/html")).decode()
    assert page.startswith("<!DOCTYPE html>") and f"<td>{bands['red_var']}</td>" in page


async def test_capabilities_offer_getfeatureinfo_and_queryable_layers(mesh: Mesh) -> None:
    service = await asyncio.to_thread(WebMapService, wms_url(mesh), version="1.3.0")
    operation = service.getOperationByName("GetFeatureInfo")
    assert operation.formatOptions == ["application/json", "text/plain", "text/html"]
    assert operation.methods[0]["url"] == wms_url(mesh) + "?"
    assert [service[name].queryable for name in LAYERS] == [1] * len(LAYERS)


def info_query(**overrides: str | None) -> str:
    params: dict[str, str | None] = {
        "SERVICE": "WMS", "VERSION": "1.3.0", "REQUEST": "GetFeatureInfo", "LAYERS": HARMONY_EXAMPLE, "STYLES": "",
        "CRS": "CRS:84", "BBOX": "10,-5,30,15", "WIDTH": "256", "HEIGHT": "256", "FORMAT": "image/png",
        "QUERY_LAYERS": HARMONY_EXAMPLE, "INFO_FORMAT": "application/json", "I": "128", "J": "128",
    }
    params.update({key.upper(): value for key, value in overrides.items()})
    return urlencode({key: value for key, value in params.items() if value is not None})


EXCEPTIONS = [
    (info_query(i="256"), 400, "InvalidPoint"),
    (info_query(j="-1"), 400, "InvalidPoint"),
    (info_query(i="12.5"), 400, "InvalidPoint"),
    (info_query(query_layers="red_var"), 400, "LayerNotQueryable"),
    (info_query(query_layers="purple_var"), 400, "LayerNotDefined"),
    (info_query(info_format="application/vnd.ogc.gml"), 400, "InvalidFormat"),
    (info_query(i=None), 400, "MissingParameterValue"),
    (info_query(info_format=None), 400, "MissingParameterValue"),
    (info_query(query_layers=None), 400, "MissingParameterValue"),
    (info_query(feature_count="0"), 400, "InvalidParameterValue"),
    (info_query(crs="EPSG:32633"), 400, "InvalidCRS"),
]


@pytest.mark.parametrize("query,status,code", EXCEPTIONS)
async def test_bad_requests_get_service_exceptions(mesh: Mesh, query: str, status: int, code: str) -> None:
    assert_exception(await get(f"{wms_url(mesh)}?{query}"), status, code)


async def test_format_may_be_left_out_and_a_collection_no_service_draws(mesh: Mesh) -> None:
    status, headers, body = await get(f"{wms_url(mesh)}?{info_query(format=None)}")
    assert status == 200 and headers["Content-Type"].startswith("application/json"), body
    query = info_query(layers="h_canopy", query_layers="h_canopy")
    assert_exception(await get(f"{wms_url(mesh, ATL08)}?{query}"), 422, "OperationNotSupported")
