"""WMS 1.3.0 documents: one collection's capabilities, and the ServiceExceptionReport.

The element order follows the WMS 1.3.0 schema (capabilities_1_3_0.xsd), which is strict about it.
Tags are written unqualified under a default xmlns declared on the root: ElementTree's own
default_namespace option refuses unqualified attributes, which both documents have.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from edge.wms_info import INFO_FORMATS

WMS_NS = "http://www.opengis.net/wms"
OGC_NS = "http://www.opengis.net/ogc"
XLINK_NS = "http://www.w3.org/1999/xlink"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
CAPABILITIES_SCHEMA = "http://schemas.opengis.net/wms/1.3.0/capabilities_1_3_0.xsd"
EXCEPTIONS_SCHEMA = "http://schemas.opengis.net/wms/1.3.0/exceptions_1_3_0.xsd"

# What GetMap accepts is what the capabilities advertise: both read these.
CRS_CODES = ("EPSG:4326", "CRS:84", "EPSG:3857")
MAP_FORMATS = ("image/png", "image/jpeg", "image/gif", "image/tiff")
MAX_SIZE = 4096
LAYER_LIMIT = 1   # one layer per map: the edge never composes images itself
DEFAULT_STYLE = "default"

# Web Mercator's square world: latitudes beyond this are not drawable.
_MERCATOR_LAT = 85.0511287798066
_EARTH_RADIUS = 6378137.0



@dataclass(frozen=True)
class MapLayer:
    name: str
    title: str
    abstract: str = ""


@dataclass(frozen=True)
class LayerTree:
    """What a collection offers as WMS layers: its extent, its named layers and its times."""

    title: str
    abstract: str
    bbox: tuple[float, float, float, float]    # west, south, east, north (degrees)
    layers: tuple[MapLayer, ...]
    times: tuple[str, ...]                      # ISO 8601 instants, sorted
    default_time: str                           # what a GetMap without TIME draws


def capabilities(tree: LayerTree, service_url: str) -> bytes:
    root = _root("WMS_Capabilities", WMS_NS, CAPABILITIES_SCHEMA)
    root.set("xmlns:xlink", XLINK_NS)
    service = _sub(root, "Service")
    _sub(service, "Name", "WMS")
    _sub(service, "Title", f"geomesh WMS: {tree.title}")
    _sub(service, "Abstract", tree.abstract)
    _link(service, service_url)
    _sub(service, "LayerLimit", str(LAYER_LIMIT))
    _sub(service, "MaxWidth", str(MAX_SIZE))
    _sub(service, "MaxHeight", str(MAX_SIZE))

    capability = _sub(root, "Capability")
    requests = _sub(capability, "Request")
    # The spec wants an online resource prefix that parameters can be appended to.
    _operation(requests, "GetCapabilities", ("text/xml",), service_url + "?")
    _operation(requests, "GetMap", MAP_FORMATS, service_url + "?")
    _operation(requests, "GetFeatureInfo", INFO_FORMATS, service_url + "?")
    exception = _sub(capability, "Exception")
    _sub(exception, "Format", "XML")

    collection = _sub(capability, "Layer")
    _sub(collection, "Title", tree.title)
    _sub(collection, "Abstract", tree.abstract)
    for code in CRS_CODES:
        _sub(collection, "CRS", code)
    _extent(collection, tree.bbox)
    for layer in tree.layers:
        named = _sub(collection, "Layer", attrib={"queryable": "1", "opaque": "0"})  # GetFeatureInfo
        _sub(named, "Name", layer.name)
        _sub(named, "Title", layer.title)
        if layer.abstract:
            _sub(named, "Abstract", layer.abstract)
        # Extents are inheritable, but OWSLib reads per-CRS boxes only from the layer itself.
        _extent(named, tree.bbox)
        if tree.times:
            _sub(named, "Dimension", ",".join(tree.times),
                 {"name": "time", "units": "ISO8601", "default": tree.default_time,
                  "multipleValues": "0", "nearestValue": "0", "current": "0"})
        style = _sub(named, "Style")
        _sub(style, "Name", DEFAULT_STYLE)
        _sub(style, "Title", "Default rendering")
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def exception_report(code: str | None, message: str, locator: str | None = None) -> bytes:
    root = _root("ServiceExceptionReport", OGC_NS, EXCEPTIONS_SCHEMA)
    attrib = {"code": code} if code else {}
    if locator:
        attrib["locator"] = locator
    ET.SubElement(root, "ServiceException", attrib).text = message
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def crs_bbox(code: str, bbox: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """A geographic box as WMS 1.3.0 writes it for a CRS: minx, miny, maxx, maxy in that CRS's axis order."""
    west, south, east, north = bbox
    if code == "EPSG:4326":  # latitude first, as EPSG defines it
        return south, west, north, east
    if code == "EPSG:3857":
        return (*_mercator(west, south), *_mercator(east, north))
    return bbox


def _mercator(lon: float, lat: float) -> tuple[float, float]:
    lat = max(-_MERCATOR_LAT, min(_MERCATOR_LAT, lat))
    x = math.radians(lon) * _EARTH_RADIUS
    y = math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)) * _EARTH_RADIUS
    return x, y


def _extent(layer: ET.Element, bbox: tuple[float, float, float, float]) -> None:
    geographic = _sub(layer, "EX_GeographicBoundingBox")
    for name, value in zip(("westBoundLongitude", "eastBoundLongitude", "southBoundLatitude", "northBoundLatitude"),
                           (bbox[0], bbox[2], bbox[1], bbox[3])):
        _sub(geographic, name, _number(value))
    for code in CRS_CODES:
        minx, miny, maxx, maxy = crs_bbox(code, bbox)
        _sub(layer, "BoundingBox", attrib={"CRS": code, "minx": _number(minx), "miny": _number(miny),
                                           "maxx": _number(maxx), "maxy": _number(maxy)})


def _operation(requests: ET.Element, name: str, formats: tuple[str, ...], url: str) -> None:
    operation = _sub(requests, name)
    for media_type in formats:
        _sub(operation, "Format", media_type)
    get = _sub(_sub(_sub(operation, "DCPType"), "HTTP"), "Get")
    _link(get, url)


def _link(parent: ET.Element, url: str) -> None:
    _sub(parent, "OnlineResource", attrib={"xlink:type": "simple", "xlink:href": url})


def _number(value: float) -> str:
    return f"{value:.10g}"


def _root(tag: str, namespace: str, schema: str) -> ET.Element:
    return ET.Element(tag, {"xmlns": namespace, "xmlns:xsi": XSI_NS, "version": "1.3.0",
                            "xsi:schemaLocation": f"{namespace} {schema}"})


def _sub(parent: ET.Element, tag: str, text: str | None = None, attrib: dict[str, str] | None = None) -> ET.Element:
    element = ET.SubElement(parent, tag, attrib or {})
    element.text = text
    return element
