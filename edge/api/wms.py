"""WMS 1.3.0 at /{collectionId}/wms: GetCapabilities, and GetMap and GetFeatureInfo answered by the scheduler.

Parameter names are case-insensitive and values case-sensitive, as the standard says. One layer
per map (LayerLimit 1): the composite layer already draws three variables, and stacking maps
would mean composing images here, which the edge never does. Every failure is answered with a
ServiceExceptionReport, never with the JSON the rest of the edge speaks.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web

from edge import telemetry
from edge.api.common import root_url
from edge.auth import bearer_token, caller, renders_errors
from edge.clients import CLIENTS
from edge.errors import CHALLENGE
from edge.wms_info import INFO_FORMATS, feature_info
from edge.wms_xml import (
    CRS_CODES,
    DEFAULT_STYLE,
    LAYER_LIMIT,
    MAP_FORMATS,
    MAX_SIZE,
    LayerTree,
    MapLayer,
    capabilities,
    exception_report,
)
from geomesh.errors import GeomeshError, UnauthorizedError, UnsupportedOperationError
from geomesh.model import TimeRange, parse_datetime
from geomesh.rpc import REQUEST_ID_KEY, rpc_errors
from geomesh.v1 import catalog_pb2, scheduler_pb2, transformer_pb2, types_pb2

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

CACHE_SECONDS = 60.0
RGB = ("red_var", "green_var", "blue_var")
# Operations of WMS that exist but are not offered here (the rest are simply invalid).
_UNSUPPORTED = ("GetLegendGraphic", "GetStyles", "DescribeLayer")
# GetFeatureInfo reports at most this many granules under a point (the scheduler samples no more).
MAX_FEATURE_COUNT = 16
# Errors from the catalog or scheduler whose WMS code is not their class's default.
_CODES: dict[type[GeomeshError], str] = {UnsupportedOperationError: "OperationNotSupported"}
_XML = "text/xml"


class WmsError(GeomeshError):
    """A client error with its WMS exception code, and the parameter at fault when there is one."""

    http_status = 400

    def __init__(self, code: str, message: str, locator: str | None = None, http_status: int = 400) -> None:
        super().__init__(message)
        self.wms_code, self.locator, self.http_status = code, locator, http_status


@dataclass(frozen=True)
class MapSource:
    """A collection as WMS sees it, from the catalog: cached because clients ask for it often."""

    collection_id: str
    tree: LayerTree
    variables: dict[str, list[str]]     # layer name -> the variables it draws
    granule_times: list[TimeRange]
    renderable: bool                    # the collection's first service draws maps


# Collection id -> (expiry, source); one per app, made by install() before the app starts.
SOURCES = web.AppKey("wms_sources", dict)


def install(app: web.Application) -> None:
    app[SOURCES] = {}
    renders_errors(app, wms, _exception)


@routes.get("/{collectionId}/wms")
async def wms(request: web.Request) -> web.StreamResponse:
    try:
        params: dict[str, str] = {}
        for key, value in request.query.items():
            params.setdefault(key.lower(), value)  # the first of a repeated name wins
        user = caller(request).user  # authenticated before: every WMS request needs a user when users are configured
        operation = _required(params, "request")
        if operation == "GetCapabilities":
            return await _get_capabilities(request, params)
        if operation == "GetMap":
            return await _get_map(request, params, user)
        if operation == "GetFeatureInfo":
            return await _get_feature_info(request, params, user)
        if operation in _UNSUPPORTED:
            raise WmsError("OperationNotSupported",
                           f"{operation} is not offered by this server: use GetCapabilities, GetMap or GetFeatureInfo", "request")
        raise WmsError("InvalidParameterValue",
                       f"REQUEST={operation} is not a WMS 1.3.0 operation here (values are case-sensitive): "
                       "use GetCapabilities, GetMap or GetFeatureInfo", "request")
    except GeomeshError as error:
        return _exception(error)
    except Exception:
        log.exception("unexpected error answering %s", request.path_qs)
        return _exception(GeomeshError("Internal server error"))


def _exception(error: GeomeshError) -> web.Response:
    code = _CODES.get(type(error), error.wms_code)
    response = web.Response(
        body=exception_report(code, error.message, getattr(error, "locator", None)),
        status=error.http_status, headers={"Content-Type": _XML},
    )
    if isinstance(error, UnauthorizedError):
        response.headers["WWW-Authenticate"] = CHALLENGE
    return response


async def _get_capabilities(request: web.Request, params: dict[str, str]) -> web.Response:
    # VERSION is optional here: version negotiation always lands on 1.3.0, the one we speak.
    service = _required(params, "service")
    if service != "WMS":
        raise WmsError("InvalidParameterValue", f"SERVICE={service} is not served here: use SERVICE=WMS", "service")
    source = await _source(request)
    if not source.renderable:
        raise _not_rendered(source)
    url = f"{root_url(request)}/{request.match_info['collectionId']}/wms"
    return web.Response(body=capabilities(source.tree, url), headers={"Content-Type": _XML})


async def _get_map(request: web.Request, params: dict[str, str], user: str) -> web.StreamResponse:
    source = await _map_source(request, params)
    map_request = _map_request(params, source)
    map_request.request_id = telemetry.request_id(request)
    map_request.user = user
    map_request.access_token = bearer_token(request)
    with rpc_errors():
        rendered = await request.app[CLIENTS].scheduler.GetMap(map_request, metadata=((REQUEST_ID_KEY, map_request.request_id),))
    return web.Response(
        body=rendered.content,
        content_type=rendered.header.media_type,
        headers={
            "Content-Disposition": f'inline; filename="{rendered.header.file_name}"',
            "X-Request-Id": map_request.request_id,
        },
    )


async def _get_feature_info(request: web.Request, params: dict[str, str], user: str) -> web.Response:
    """The values under pixel I, J of the map the GetMap parameters describe, for its query layer."""
    source = await _map_source(request, params)
    params.setdefault("format", MAP_FORMATS[0])  # lenient, like STYLES: the map's format does not matter here
    map_request = _map_request(params, source)
    layer = params["layers"].split(",")[0]
    for name in _required(params, "query_layers").split(","):
        if name not in source.variables:
            raise WmsError("LayerNotDefined", f"No layer {name!r}: the layers are {', '.join(source.variables)}", "query_layers")
        if name != layer:
            raise WmsError("LayerNotQueryable", f"QUERY_LAYERS names {name!r}, which is not in LAYERS ({layer})", "query_layers")
    info_format = _required(params, "info_format")
    if info_format not in INFO_FORMATS:
        raise WmsError("InvalidFormat", f"INFO_FORMAT={info_format} is not offered: use one of {', '.join(INFO_FORMATS)}", "info_format")
    render = map_request.render
    i, j = _pixel(params, "i", render.width), _pixel(params, "j", render.height)
    count_text = params.get("feature_count", "1")
    try:
        count = int(count_text)
    except ValueError:
        count = 0
    if count < 1:
        raise WmsError("InvalidParameterValue", f"FEATURE_COUNT={count_text} must be a whole number of at least 1", "feature_count")
    map_request.request_id = telemetry.request_id(request)
    map_request.user = user
    map_request.access_token = bearer_token(request)
    info_request = scheduler_pb2.FeatureInfoRequest(map=map_request, i=i, j=j, feature_count=min(count, MAX_FEATURE_COUNT))
    with rpc_errors():
        samples = await request.app[CLIENTS].scheduler.GetFeatureInfo(info_request, metadata=((REQUEST_ID_KEY, map_request.request_id),))
    return web.Response(body=feature_info(layer, samples, info_format), content_type=info_format, charset="utf-8",
                        headers={"X-Request-Id": map_request.request_id})


def _pixel(params: dict[str, str], name: str, size: int) -> int:
    text = _required(params, name)
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < size:
        raise WmsError("InvalidPoint", f"{name.upper()}={text} must be a whole pixel number from 0 to {size - 1}", name)
    return value


async def _map_source(request: web.Request, params: dict[str, str]) -> MapSource:
    """The collection of a GetMap or GetFeatureInfo, once VERSION and SERVICE are checked."""
    version = _required(params, "version")
    if version != "1.3.0":
        raise WmsError("InvalidParameterValue", f"VERSION={version} is not supported: this server speaks WMS 1.3.0", "version")
    if params.get("service", "WMS") != "WMS":
        raise WmsError("InvalidParameterValue", f"SERVICE={params['service']} is not served here: use SERVICE=WMS", "service")
    source = await _source(request)
    if not source.renderable:
        raise _not_rendered(source)
    return source


def _map_request(params: dict[str, str], source: MapSource) -> scheduler_pb2.MapRequest:
    layers = _required(params, "layers").split(",")
    if len(layers) > LAYER_LIMIT:
        raise WmsError("InvalidParameterValue", f"{len(layers)} layers were asked for: this server draws {LAYER_LIMIT} layer per map", "layers")
    layer = layers[0]
    if layer not in source.variables:
        raise WmsError("LayerNotDefined", f"No layer {layer!r}: the layers are {', '.join(source.variables)}", "layers")
    styles = params.get("styles", "")  # lenient: some clients leave STYLES out instead of sending it empty
    if styles and len(styles.split(",")) != len(layers):
        raise WmsError("InvalidParameterValue", "STYLES must be empty or name one style per layer", "styles")
    if styles not in ("", DEFAULT_STYLE):
        raise WmsError("StyleNotDefined", f"No style {styles!r}: every layer has only the style {DEFAULT_STYLE!r} (or leave STYLES empty)", "styles")
    crs = _required(params, "crs")
    if crs not in CRS_CODES:
        raise WmsError("InvalidCRS", f"CRS={crs} is not offered: use one of {', '.join(CRS_CODES)}", "crs")
    min_x, min_y, max_x, max_y = _bbox(_required(params, "bbox"), crs)
    width, height = _size(params, "width"), _size(params, "height")
    media_type = _required(params, "format")
    if media_type not in MAP_FORMATS:
        raise WmsError("InvalidFormat", f"FORMAT={media_type} is not offered: use one of {', '.join(MAP_FORMATS)}", "format")
    render = transformer_pb2.RenderRequest(
        variables=source.variables[layer], crs=crs, min_x=min_x, min_y=min_y, max_x=max_x, max_y=max_y,
        width=width, height=height, format=media_type, transparent=_transparent(params),
        bgcolor=_bgcolor(params), style=styles,
    )
    map_request = scheduler_pb2.MapRequest(collection=source.collection_id, render=render)
    map_request.granule_ids.extend(g for g in params.get("granuleid", "").split(",") if g)
    if "time" in params:
        map_request.temporal.CopyFrom(_time(params["time"], source).to_proto())
    return map_request


def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name, "")
    if not value:
        raise WmsError("MissingParameterValue", f"The parameter {name.upper()} is required", name)
    return value


def _bbox(text: str, crs: str) -> tuple[float, float, float, float]:
    """BBOX in the CRS's own axis order -> x first; EPSG:4326 is latitude first in WMS 1.3.0."""
    try:
        numbers = [float(part) for part in text.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) != 4 or not all(math.isfinite(n) for n in numbers):
        raise WmsError("InvalidParameterValue", f"BBOX={text} must be four numbers: minx,miny,maxx,maxy", "bbox")
    if numbers[0] >= numbers[2] or numbers[1] >= numbers[3]:
        raise WmsError("InvalidParameterValue", f"BBOX={text}: each minimum must be less than its maximum", "bbox")
    if crs == "EPSG:4326":
        south, west, north, east = numbers
        return west, south, east, north
    return numbers[0], numbers[1], numbers[2], numbers[3]


def _size(params: dict[str, str], name: str) -> int:
    text = _required(params, name)
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_SIZE:
        raise WmsError("InvalidParameterValue", f"{name.upper()}={text} must be a whole number from 1 to {MAX_SIZE}", name)
    return value


def _transparent(params: dict[str, str]) -> bool:
    text = params.get("transparent", "FALSE")
    if text.upper() not in ("TRUE", "FALSE"):
        raise WmsError("InvalidParameterValue", f"TRANSPARENT={text} must be TRUE or FALSE", "transparent")
    return text.upper() == "TRUE"


def _bgcolor(params: dict[str, str]) -> str:
    text = params.get("bgcolor", "0xFFFFFF")
    digits = text[2:] if text[:2] in ("0x", "0X") else ""
    if len(digits) != 6 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise WmsError("InvalidParameterValue", f"BGCOLOR={text} must be a hexadecimal colour 0xRRGGBB", "bgcolor")
    return "0x" + digits.upper()


def _time(text: str, source: MapSource) -> TimeRange:
    """An instant or start/end (a trailing /period is accepted and ignored), which must meet a granule."""
    parts = text.split("/")
    try:
        if len(parts) not in (1, 2, 3):
            raise ValueError(text)
        start, end = parse_datetime(parts[0]), parse_datetime(parts[1 if len(parts) > 1 else 0])
    except ValueError:
        raise WmsError("InvalidDimensionValue", f"TIME={text} must be an ISO 8601 instant or start/end, e.g. 2020-01-16T02:00:00Z", "time") from None
    if start > end:
        raise WmsError("InvalidDimensionValue", f"TIME={text}: the start is after the end", "time")
    wanted = TimeRange(start, end)
    if not any(wanted.intersects(granule) for granule in source.granule_times):
        raise WmsError("InvalidDimensionValue", f"TIME={text} meets no granule: GetCapabilities lists the times", "time")
    return wanted


def _not_rendered(source: MapSource) -> WmsError:
    return WmsError("OperationNotSupported", f"No service draws maps of {source.collection_id}: use its rangeset (ogc-api-coverages) instead", http_status=422)


async def _source(request: web.Request) -> MapSource:
    key = request.match_info["collectionId"]
    cache = request.app[SOURCES]
    cached = cache.get(key)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    source = await _load(request, key)
    cache[key] = (time.monotonic() + CACHE_SECONDS, source)
    return source


async def _load(request: web.Request, collection: str) -> MapSource:
    clients = request.app[CLIENTS]
    with rpc_errors():
        described = await clients.catalog.Capabilities(catalog_pb2.GetCollectionRequest(collection=collection))
        granules = [
            message.granule
            async for message in clients.catalog.SearchGranules(
                catalog_pb2.SearchGranulesRequest(collection_id=described.collection.id, limit=0)
            )
            if message.WhichOneof("item") == "granule"
        ]
    info = described.collection
    layers, variables = _layers(info, list(described.variables))
    granule_times = [TimeRange.from_proto(g.temporal) for g in granules if g.HasField("temporal")]
    starts = sorted({t.start for t in granule_times if t.start is not None})
    ends = [end for t in granule_times if (end := t.end or t.start) is not None]
    default_time = f"{_iso(starts[0])}/{_iso(max(ends))}" if starts and ends else ""
    bbox = (info.bbox.west, info.bbox.south, info.bbox.east, info.bbox.north) if info.HasField("bbox") else (-180.0, -90.0, 180.0, 90.0)
    tree = LayerTree(
        title=info.title or info.short_name or info.id,
        abstract=info.summary,
        bbox=bbox,
        layers=tuple(layers),
        times=tuple(_iso(s) for s in starts),
        default_time=default_time,
    )
    return MapSource(info.id, tree, variables, granule_times, renderable=bool(described.services) and described.services[0].capabilities.maps)


def _layers(info: types_pb2.Collection, variables: list[types_pb2.Variable]) -> tuple[list[MapLayer], dict[str, list[str]]]:
    """A colour composite named after the collection (when it has RGB channels), then each variable."""
    layers: list[MapLayer] = []
    drawn: dict[str, list[str]] = {}
    names = {v.name for v in variables}
    if all(name in names for name in RGB):
        layers.append(MapLayer(info.id, f"{info.title or info.short_name} (colour: {', '.join(RGB)})",
                               "The red, green and blue channels drawn together as colour"))
        drawn[info.id] = list(RGB)
    for variable in variables:
        layers.append(MapLayer(variable.name, (variable.long_name or variable.description or variable.name).strip(), variable.description))
        drawn[variable.name] = [variable.name]
    return layers, drawn


def _iso(value: datetime) -> str:
    text = value.astimezone(UTC).isoformat(timespec="milliseconds" if value.microsecond else "seconds")
    return text.replace("+00:00", "Z")
