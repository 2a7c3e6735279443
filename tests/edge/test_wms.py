"""WMS 1.3.0 through a real mesh, as OWSLib and GDAL's WMS driver use it.

The capabilities are not validated against the WMS 1.3.0 XSD: the schema (and the OGC schemas it
imports) cannot be downloaded here and no copy ships with the installed packages. OWSLib and
ElementTree parse the document instead, and the element order the schema imposes is checked below.
"""

from __future__ import annotations

import asyncio
import warnings
import xml.etree.ElementTree as ET
from urllib.parse import urlencode

import numpy as np
import pytest
import rasterio
from owslib.util import ServiceException
from owslib.wms import WebMapService
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile
from rasterio.windows import from_bounds

from tests.conftest import ATL08, GLOBAL_GRANULE, HARMONY_EXAMPLE, Mesh
from tests.edge.test_coverages import get

WMS = "{http://www.opengis.net/wms}"
OGC = "{http://www.opengis.net/ogc}"
XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
LAYERS = [HARMONY_EXAMPLE, "red_var", "green_var", "blue_var", "alpha_var"]
MERCATOR = 20037508.342789244
# (lon, lat) of land and of open sea: Africa is land, the middle of the Pacific is not.
LAND, SEA = (20.0, 5.0), (-140.0, 0.0)


def wms_url(mesh: Mesh, collection: str = HARMONY_EXAMPLE) -> str:
    return f"{mesh.url}/{collection}/wms"


def map_query(**overrides: str | None) -> str:
    params: dict[str, str | None] = {
        "SERVICE": "WMS", "VERSION": "1.3.0", "REQUEST": "GetMap", "LAYERS": HARMONY_EXAMPLE, "STYLES": "",
        "CRS": "EPSG:4326", "BBOX": "-90,-180,90,180", "WIDTH": "360", "HEIGHT": "180", "FORMAT": "image/png",
        "TRANSPARENT": "TRUE",
    }
    params.update({key.upper(): value for key, value in overrides.items()})
    return urlencode({key: value for key, value in params.items() if value is not None})


def read_image(body: bytes) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a map image carries no georeferencing
        with MemoryFile(body) as memory, memory.open() as dataset:
            return dataset.read()


def pixel(image: np.ndarray, lon: float, lat: float, bbox: tuple[float, float, float, float]) -> np.ndarray:
    """The bands at a point of an image covering bbox (west, south, east, north) in degrees."""
    _, height, width = image.shape
    west, south, east, north = bbox
    column = int((lon - west) / (east - west) * width)
    row = int((north - lat) / (north - south) * height)
    return image[:, row, column]


# --- GetCapabilities -------------------------------------------------------------------------


async def test_owslib_reads_the_capabilities(mesh: Mesh) -> None:
    service = await asyncio.to_thread(WebMapService, wms_url(mesh), version="1.3.0")
    assert service.identification.type == "WMS"
    assert service.identification.version == "1.3.0"
    assert list(service.contents) == LAYERS
    assert service[HARMONY_EXAMPLE].title.startswith("Harmony Example Data")
    assert service["red_var"].title == "Red Channel"
    assert service["alpha_var"].title == "Alpha channel"
    get_map = service.getOperationByName("GetMap")
    assert get_map.formatOptions == ["image/png", "image/jpeg", "image/gif", "image/tiff"]
    assert get_map.methods[0]["url"] == wms_url(mesh) + "?"
    for name in LAYERS:
        layer = service[name]
        assert sorted(layer.crsOptions) == ["CRS:84", "EPSG:3857", "EPSG:4326"]
        assert layer.boundingBoxWGS84 == (-180, -90, 180, 90)
        boxes = {box[4]: box[:4] for box in layer.crs_list}  # OWSLib gives them back x first
        assert boxes["EPSG:4326"] == (-180, -90, 180, 90)
        assert boxes["CRS:84"] == (-180, -90, 180, 90)
        assert boxes["EPSG:3857"] == pytest.approx((-MERCATOR, -MERCATOR, MERCATOR, MERCATOR))
        assert list(layer.styles) == ["default"]
        assert layer.timepositions[0] == "2020-01-01T00:00:00Z"
        assert layer.timepositions[-1].startswith("2020-01-16T")
        assert layer.timepositions == sorted(set(layer.timepositions))
        assert layer.defaulttimeposition == "2020-01-01T00:00:00Z/2020-01-16T21:59:59Z"  # every granule


# Child order of the WMS 1.3.0 schema's sequences (the elements written here, in schema order).
SCHEMA_ORDER = {
    "WMS_Capabilities": ["Service", "Capability"],
    "Service": ["Name", "Title", "Abstract", "KeywordList", "OnlineResource", "ContactInformation", "Fees",
                "AccessConstraints", "LayerLimit", "MaxWidth", "MaxHeight"],
    "Capability": ["Request", "Exception", "Layer"],
    "Request": ["GetCapabilities", "GetMap", "GetFeatureInfo"],
    "GetMap": ["Format", "DCPType"],
    "Layer": ["Name", "Title", "Abstract", "KeywordList", "CRS", "EX_GeographicBoundingBox", "BoundingBox",
              "Dimension", "Attribution", "AuthorityURL", "Identifier", "MetadataURL", "DataURL",
              "FeatureListURL", "Style", "MinScaleDenominator", "MaxScaleDenominator", "Layer"],
    "Style": ["Name", "Title", "Abstract", "LegendURL"],
}


async def test_capabilities_document_follows_the_schema(mesh: Mesh) -> None:
    status, headers, body = await get(f"{wms_url(mesh)}?service=WMS&request=GetCapabilities&version=1.3.0")
    assert status == 200
    assert headers["Content-Type"] == "text/xml"
    root = ET.fromstring(body)
    assert root.tag == f"{WMS}WMS_Capabilities" and root.get("version") == "1.3.0"
    for element in root.iter():
        order = SCHEMA_ORDER.get(element.tag.removeprefix(WMS))
        if order is None:
            continue
        tags = [child.tag.removeprefix(WMS) for child in element]
        assert set(tags) <= set(order), (element.tag, tags)
        positions = [order.index(tag) for tag in tags]
        assert positions == sorted(positions), (element.tag, tags)
    assert root.find(f"{WMS}Service/{WMS}OnlineResource").get(XLINK_HREF) == wms_url(mesh)
    for resource in root.iterfind(f"{WMS}Capability/{WMS}Request//{WMS}OnlineResource"):
        assert resource.get(XLINK_HREF) == wms_url(mesh) + "?"
    assert [f.text for f in root.iterfind(f"{WMS}Capability/{WMS}Exception/{WMS}Format")] == ["XML"]
    collection = root.find(f"{WMS}Capability/{WMS}Layer")
    assert collection.find(f"{WMS}Name") is None  # a title for the tree, not a layer to draw
    lat_first = collection.find(f"{WMS}BoundingBox[@CRS='EPSG:4326']")
    assert [lat_first.get(k) for k in ("minx", "miny", "maxx", "maxy")] == ["-90", "-180", "90", "180"]


async def test_parameter_names_are_case_insensitive(mesh: Mesh) -> None:
    status, _, body = await get(f"{wms_url(mesh)}?SeRvIcE=WMS&REQUEST=GetCapabilities")
    assert status == 200
    assert ET.fromstring(body).tag == f"{WMS}WMS_Capabilities"


async def test_short_name_path_serves_the_same_layers(mesh: Mesh) -> None:
    service = await asyncio.to_thread(WebMapService, wms_url(mesh, "harmony_example"), version="1.3.0")
    assert list(service.contents) == LAYERS


# --- GetMap ----------------------------------------------------------------------------------

CRS_CASES = [
    # crs, bbox as OWSLib takes it (x first: it swaps for EPSG:4326 itself), size, the box in degrees
    ("EPSG:4326", (-180, -90, 180, 90), (360, 180), (-180, -90, 180, 90)),
    ("CRS:84", (-180, -90, 180, 90), (360, 180), (-180, -90, 180, 90)),
    ("EPSG:3857", (-MERCATOR, -MERCATOR, MERCATOR, MERCATOR), (256, 256), None),
]


@pytest.mark.parametrize("crs,bbox,size,degrees", CRS_CASES, ids=[case[0] for case in CRS_CASES])
async def test_owslib_getmap_draws_the_continents(
    mesh: Mesh, crs: str, bbox: tuple[float, ...], size: tuple[int, int], degrees: tuple[float, ...] | None
) -> None:
    def draw() -> tuple[dict[str, str], bytes]:
        service = WebMapService(wms_url(mesh), version="1.3.0")
        image = service.getmap(layers=[HARMONY_EXAMPLE], styles=[""], srs=crs, bbox=bbox, size=size,
                               format="image/png", transparent=True)
        return dict(image.info()), image.read()

    headers, body = await asyncio.to_thread(draw)
    assert headers["Content-Type"] == "image/png"
    image = read_image(body)
    assert image.shape == (4, size[1], size[0])
    alpha = image[3]
    assert 0 < np.count_nonzero(alpha) < alpha.size  # land is drawn, sea left transparent
    if degrees is not None:
        assert pixel(image, *LAND, degrees)[3] > 0
        assert pixel(image, *SEA, degrees)[3] == 0
    else:  # Web Mercator: the equator is the middle row; Africa right of the middle, the Pacific left
        row = size[1] // 2
        assert alpha[row, int(size[0] * (180 + LAND[0]) / 360)] > 0
        assert alpha[row, int(size[0] * (180 + SEA[0]) / 360)] == 0


async def test_epsg_4326_is_latitude_first(mesh: Mesh) -> None:
    """The same region asked for in both axis orders draws the same picture (Australia)."""
    lat_first = await get(f"{wms_url(mesh)}?{map_query(crs='EPSG:4326', bbox='-45,110,-9,156', width='184', height='144')}")
    lon_first = await get(f"{wms_url(mesh)}?{map_query(crs='CRS:84', bbox='110,-45,156,-9', width='184', height='144')}")
    assert lat_first[0] == lon_first[0] == 200, (lat_first[2][:300], lon_first[2][:300])
    first, second = read_image(lat_first[2]), read_image(lon_first[2])
    assert first.shape == (4, 144, 184)
    assert np.array_equal(first, second)
    assert pixel(first, 134.0, -25.0, (110, -45, 156, -9))[3] > 0  # the middle of Australia


@pytest.mark.parametrize("media_type", ["image/png", "image/jpeg", "image/gif", "image/tiff"])
async def test_every_advertised_format(mesh: Mesh, media_type: str) -> None:
    status, headers, body = await get(f"{wms_url(mesh)}?{map_query(format=media_type, width='90', height='45')}")
    assert status == 200, body[:300]
    assert headers["Content-Type"] == media_type
    image = read_image(body)
    assert image.shape[1:] == (45, 90)


async def test_time_and_granule_id_choose_what_is_drawn(mesh: Mesh) -> None:
    # Only the Africa granule of 16 January: the Americas stay empty.
    status, _, body = await get(f"{wms_url(mesh)}?{map_query(time='2020-01-16T02:00:00Z')}")
    assert status == 200, body[:300]
    africa_only = read_image(body)
    assert pixel(africa_only, *LAND, (-180, -90, 180, 90))[3] > 0
    assert pixel(africa_only, -60.0, -10.0, (-180, -90, 180, 90))[3] == 0  # Brazil
    status, _, body = await get(f"{wms_url(mesh)}?{map_query(granuleId=GLOBAL_GRANULE)}")
    assert status == 200, body[:300]
    assert pixel(read_image(body), -60.0, -10.0, (-180, -90, 180, 90))[3] > 0


async def test_gdal_wms_driver_reads_a_window(mesh: Mesh) -> None:
    # GDAL reads the GetMap URL's values as written: commas and colons must not be percent-encoded.
    url = (f"WMS:{wms_url(mesh)}?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap&LAYERS={HARMONY_EXAMPLE}"
           "&CRS=EPSG:4326&BBOX=-90,-180,90,180&FORMAT=image/png")

    def read() -> tuple[np.ndarray, np.ndarray]:
        with rasterio.open(url) as dataset:
            assert dataset.crs.to_epsg() == 4326 and dataset.bounds == (-180, -90, 180, 90)

            def window(west: float, south: float, east: float, north: float) -> np.ndarray:
                box = from_bounds(west, south, east, north, dataset.transform)
                return dataset.read(window=box, out_shape=(dataset.count, 40, 40))

            return window(10, -10, 30, 10), window(-150, -10, -130, 10)  # the Congo, the Pacific

    congo, pacific = await asyncio.to_thread(read)
    # Opaque map: land in its colour, everything else the white BGCOLOR default.
    assert (congo != 255).any(axis=0).mean() > 0.5
    assert (pacific != 255).any(axis=0).mean() < 0.05


# --- Exceptions ------------------------------------------------------------------------------

EXCEPTIONS = [
    ("service=WMS&version=1.3.0", 400, "MissingParameterValue"),
    ("request=GetCapabilities", 400, "MissingParameterValue"),
    (map_query(layers=None), 400, "MissingParameterValue"),
    (map_query(crs=None), 400, "MissingParameterValue"),
    (map_query(bbox=None), 400, "MissingParameterValue"),
    (map_query(width=None), 400, "MissingParameterValue"),
    (map_query(format=None), 400, "MissingParameterValue"),
    ("service=WMS&request=getcapabilities", 400, "InvalidParameterValue"),
    ("service=WFS&request=GetCapabilities", 400, "InvalidParameterValue"),
    (map_query(version="1.1.1"), 400, "InvalidParameterValue"),
    (map_query(bbox="-90,-180,90"), 400, "InvalidParameterValue"),
    (map_query(bbox="10,-180,-10,180"), 400, "InvalidParameterValue"),
    (map_query(width="0"), 400, "InvalidParameterValue"),
    (map_query(height="5000"), 400, "InvalidParameterValue"),
    (map_query(width="wide"), 400, "InvalidParameterValue"),
    (map_query(transparent="maybe"), 400, "InvalidParameterValue"),
    (map_query(bgcolor="white"), 400, "InvalidParameterValue"),
    (map_query(layers="red_var,blue_var"), 400, "InvalidParameterValue"),
    (map_query(layers="purple_var"), 400, "LayerNotDefined"),
    (map_query(styles="boxfill/rainbow"), 400, "StyleNotDefined"),
    (map_query(crs="EPSG:32633"), 400, "InvalidCRS"),
    (map_query(crs="epsg:4326"), 400, "InvalidCRS"),
    (map_query(format="image/webp"), 400, "InvalidFormat"),
    (map_query(time="yesterday"), 400, "InvalidDimensionValue"),
    (map_query(time="2020-01-05T00:00:00Z/2020-01-04T00:00:00Z"), 400, "InvalidDimensionValue"),
    (map_query(time="2019-06-01T00:00:00Z"), 400, "InvalidDimensionValue"),
    (map_query(request="GetLegendGraphic"), 400, "OperationNotSupported"),
]


@pytest.mark.parametrize("query,status,code", EXCEPTIONS)
async def test_bad_requests_get_service_exceptions(mesh: Mesh, query: str, status: int, code: str) -> None:
    assert_exception(await get(f"{wms_url(mesh)}?{query}"), status, code)


async def test_a_collection_no_service_draws(mesh: Mesh) -> None:
    assert_exception(await get(f"{wms_url(mesh, ATL08)}?{map_query(layers='h_canopy')}"), 422, "OperationNotSupported")
    assert_exception(await get(f"{wms_url(mesh, ATL08)}?service=WMS&request=GetCapabilities"), 422, "OperationNotSupported")


async def test_an_unknown_collection_is_404_xml(mesh: Mesh) -> None:
    assert_exception(await get(f"{wms_url(mesh, 'C0-NOWHERE')}?service=WMS&request=GetCapabilities"), 404, "LayerNotDefined")


async def test_owslib_raises_the_service_exception(mesh: Mesh) -> None:
    def draw() -> None:
        WebMapService(wms_url(mesh), version="1.3.0").getmap(
            layers=["red_var"], styles=["fancy"], srs="EPSG:4326", bbox=(-180, -90, 180, 90), size=(10, 10), format="image/png"
        )

    with pytest.raises(ServiceException, match="StyleNotDefined"):
        await asyncio.to_thread(draw)


async def test_every_request_needs_credentials_when_users_are_configured(secured: Mesh) -> None:
    assert_exception(await get(f"{wms_url(secured)}?{map_query()}"), 401, "NoApplicableCode")
    assert_exception(await get(f"{wms_url(secured)}?service=WMS&request=GetCapabilities"), 401, "NoApplicableCode")
    service = await asyncio.to_thread(
        WebMapService, wms_url(secured), version="1.3.0", headers={"Authorization": "Bearer alice-token"}
    )
    assert list(service.contents) == LAYERS


def assert_exception(answer: tuple[int, dict[str, str], bytes], status: int, code: str | None) -> None:
    got_status, headers, body = answer
    assert got_status == status, body
    assert headers["Content-Type"] == "text/xml"
    root = ET.fromstring(body)
    assert root.tag == f"{OGC}ServiceExceptionReport" and root.get("version") == "1.3.0"
    exception = root.find(f"{OGC}ServiceException")
    assert exception.get("code") == code
    assert exception.text and exception.text.strip()
