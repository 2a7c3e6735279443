"""Shapes to subset by: a user's upload (GeoJSON, KML or a zipped ESRI shapefile) as one polygonal
shapely geometry in WGS84 longitude/latitude.

Shared by the scheduler, which checks an upload before any job exists and selects granules by its
bounds, and the gdal transformer, which masks by it. The scheduler passes the shape on as GeoJSON
(as Harmony converts every upload to GeoJSON before services see it), so transformers rarely read
anything else. Blocking for KML and shapefiles (GDAL, through pyogrio): run it off the event loop.
"""

from __future__ import annotations

import io
import json
import logging
import re
import xml.parsers.expat
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
import shapely.errors
import shapely.geometry
from shapely.geometry.base import BaseGeometry

from geomesh.errors import PayloadTooLargeError, RequestValidationError
from geomesh.nesting import MAX_DEPTH, TooDeep, check_xml_depth, json_depth

log = logging.getLogger(__name__)

GEOJSON = "application/geo+json"
KML = "application/vnd.google-earth.kml+xml"
SHAPEFILE_ZIP = "application/shapefile+zip"
# Content types by the kind they name; parameters (";charset=...") and case are ignored.
_BY_MEDIA_TYPE = {
    GEOJSON: GEOJSON,
    "application/json": GEOJSON,
    KML: KML,
    SHAPEFILE_ZIP: SHAPEFILE_ZIP,
    "application/zip": SHAPEFILE_ZIP,
    "application/x-zip-compressed": SHAPEFILE_ZIP,
}
# File name endings, for uploads without a useful content type (harmony-py sends .shz for zips too).
_BY_SUFFIX = {".geojson": GEOJSON, ".json": GEOJSON, ".kml": KML, ".zip": SHAPEFILE_ZIP, ".shz": SHAPEFILE_ZIP}
_UNTYPED = {"", "application/octet-stream", "text/plain", "binary/octet-stream"}

# Masking cost grows with vertices; Harmony's own services choke well before this.
MAX_VERTICES = 100_000
# A zip may hold far more than its upload size: refuse to inflate beyond this.
MAX_UNZIPPED_BYTES = 64 * 1024 * 1024
ACCEPTED = (
    "Send a GeoJSON FeatureCollection of polygons, a KML file, or a zipped ESRI shapefile (.shp, .shx, .dbf, .prj)."
)
KINDS_MESSAGE = (
    "The accepted kinds are GeoJSON (application/geo+json, .geojson or .json), KML "
    "(application/vnd.google-earth.kml+xml, .kml) and zipped ESRI shapefiles (application/shapefile+zip, .zip)."
)
_SHAPEFILE_PARTS = (".shp", ".shx", ".dbf")
_POLYGONAL = ("Polygon", "MultiPolygon")


@dataclass(frozen=True, slots=True)
class Shape:
    """A parsed upload: its geometry (valid, polygonal, WGS84) and the name it came with."""

    geometry: BaseGeometry
    file_name: str = ""

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """west, south, east, north in degrees."""
        return tuple(float(value) for value in self.geometry.bounds)  # type: ignore[return-value]

    def to_geojson(self) -> bytes:
        """The geometry as a GeoJSON Feature, coordinates at full precision (json keeps every digit)."""
        feature = {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(self.geometry)}
        return json.dumps(feature, separators=(",", ":")).encode()


def media_type_of(content_type: str | None, file_name: str) -> str:
    """The upload's kind as a media type: from its content type, else from its file name.

    An unknown but explicit content type is kept, so that parsing can name it in the error.
    """
    declared = (content_type or "").split(";", 1)[0].strip().lower()
    if declared in _BY_MEDIA_TYPE:
        return _BY_MEDIA_TYPE[declared]
    if declared in _UNTYPED:
        return _by_file_name(file_name) or declared or "application/octet-stream"
    return declared


def _by_file_name(file_name: str) -> str | None:
    name = file_name.strip().lower()
    return next((kind for suffix, kind in _BY_SUFFIX.items() if name.endswith(suffix)), None)


def parse_shape(content: bytes, media_type: str = "", file_name: str = "") -> Shape:
    """Read an upload into one valid polygonal geometry in WGS84, or say what is wrong with it."""
    kind = media_type_of(media_type, file_name)
    if kind not in (GEOJSON, KML, SHAPEFILE_ZIP):
        if media_type and media_type not in _UNTYPED:
            described = f"of type {media_type}"
        elif file_name:
            described = f"named {file_name!r}"
        else:
            described = "with neither a Content-Type nor a file name"
        raise RequestValidationError(
            f"The shapefile upload {described} is not a kind geomesh reads. {KINDS_MESSAGE} "
            "Name the kind in the part's Content-Type or by the file name's extension."
        )
    if not content.strip():
        raise RequestValidationError(f"The shapefile upload is empty. {ACCEPTED}")
    if kind == GEOJSON:
        parts = _geojson_parts(content)
    else:
        parts = _ogr_parts(content, kind)
    return Shape(_polygon_union(parts, _NAMES[kind]), file_name)


_NAMES = {GEOJSON: "GeoJSON", KML: "KML", SHAPEFILE_ZIP: "zipped shapefile"}


# -- GeoJSON -------------------------------------------------------------------------------------


def _geojson_parts(content: bytes) -> list[BaseGeometry]:
    depth = json_depth(content)
    if depth > MAX_DEPTH:
        raise RequestValidationError(
            f"The shapefile upload nests arrays and objects {depth} levels deep, beyond the limit of {MAX_DEPTH} "
            "(a MultiPolygon in a FeatureCollection needs 8): send polygons as plain GeoJSON coordinates, rings of "
            f"[longitude, latitude] positions, with properties nested no deeper. {ACCEPTED}"
        )
    try:
        # Numbers as floats: a 400-digit integer overflowed float() in shapely (a 500), one of 5000 digits int().
        document = json.loads(content, parse_int=float)
    except (UnicodeDecodeError, ValueError) as error:
        message = f"The shapefile upload is not valid GeoJSON: {_describe(error)}. {ACCEPTED}"
        raise RequestValidationError(message) from None
    try:
        return [geometry for geometry in _geometries(document) if geometry is not None]
    except (KeyError, TypeError, ValueError, AttributeError, shapely.errors.ShapelyError) as error:
        raise RequestValidationError(
            f"The shapefile upload is not valid GeoJSON: {_describe(error)}. {ACCEPTED}"
        ) from None


def _geometries(node: Any) -> list[BaseGeometry | None]:
    """Every geometry of a FeatureCollection, Feature or bare geometry (a null geometry is None)."""
    if not isinstance(node, dict) or not isinstance(node.get("type"), str):
        raise ValueError("expected a JSON object with a \"type\" member")
    kind = node["type"]
    if kind == "FeatureCollection":
        features = node.get("features")
        if not isinstance(features, list):
            raise ValueError('a FeatureCollection needs a "features" array')
        return [geometry for feature in features for geometry in _geometries(feature)]
    if kind == "Feature":
        if "geometry" not in node:
            raise ValueError('a Feature needs a "geometry" member')
        return [None] if node["geometry"] is None else _geometries(node["geometry"])
    return [shapely.geometry.shape(node)]


def _describe(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"missing member {error}"
    return (str(error) or type(error).__name__).strip().rstrip(".")


# -- KML and zipped shapefiles (GDAL through pyogrio) --------------------------------------------


def _ogr_parts(content: bytes, kind: str) -> list[BaseGeometry]:
    """Every layer's geometries, reprojected to WGS84 from the layer's CRS (a shapefile's .prj)."""
    import pyogrio.raw  # GDAL loads on first use, not when the edge imports media_type_of
    from pyogrio.errors import DataLayerError, DataSourceError

    if kind == SHAPEFILE_ZIP:
        _check_zip(content)
    else:
        _check_kml(content)
    name = _NAMES[kind]
    parts: list[BaseGeometry] = []
    try:
        # Bytes go to GDAL's /vsimem/, under a new name at each call; pyogrio opens a zip through
        # /vsizip/ on it. So layers are read by index: a layer named after the file (a KML
        # without folders) is not found under its name in the next call's copy.
        layers = pyogrio.list_layers(content)
        for index in range(len(layers)):
            meta, _, wkb, _ = pyogrio.raw.read(content, layer=index, force_2d=True, read_geometry=True)
            geometries = [shapely.from_wkb(item) for item in wkb if item is not None]
            parts.extend(_to_wgs84(geometries, meta.get("crs"), name))
    except (DataSourceError, DataLayerError, shapely.errors.ShapelyError) as error:
        log.warning("a %s upload could not be read: %s", name, error)
        raise RequestValidationError(
            f"The shapefile upload is not a readable {name}: {_ogr_problem(error, name)}. {ACCEPTED}"
        ) from None
    return parts


# GDAL names the upload by its in-memory copy (/vsimem/pyogrio_<hex>, and layers after it): not the
# client's business, and different at every call.
_VSIMEM = re.compile(r"'?/vsi\w+/[^\s']*'?|\bpyogrio_[0-9a-f]{32}\b")


def _ogr_problem(error: Exception, name: str) -> str:
    """GDAL's message without its in-memory file names, nor its advice to name a driver."""
    message = _describe(error)
    if "not recognized as being in a supported file format" in message:
        return f"GDAL does not recognize it as a {name}"
    message = message.split("; It might help", 1)[0]
    return " ".join(_VSIMEM.sub("the upload", message).split()).replace("the upload :", "the upload:").rstrip(".")


def _check_kml(content: bytes) -> None:
    """Well-formed XML, nested no deeper than MAX_DEPTH, before GDAL's recursive reader sees it."""
    try:
        check_xml_depth(content)
    except TooDeep:
        raise RequestValidationError(
            f"The KML nests elements more than {MAX_DEPTH} levels deep, beyond the limit geomesh reads (a polygon "
            f"in a few folders needs about 15): put the Placemarks in fewer nested Folders. {ACCEPTED}"
        ) from None
    except xml.parsers.expat.ExpatError as error:
        raise RequestValidationError(
            f"The shapefile upload is not a readable KML: it is not well-formed XML ({error}). {ACCEPTED}"
        ) from None


def _check_zip(content: bytes) -> None:
    """A zip holding at least one complete shapefile (.shp, .shx, .dbf), not too large unpacked."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            entries = [entry for entry in archive.infolist() if not entry.is_dir()]
    except zipfile.BadZipFile:
        raise RequestValidationError(
            f"The shapefile upload was named a zipped shapefile but is not a zip file. {ACCEPTED}"
        ) from None
    if sum(entry.file_size for entry in entries) > MAX_UNZIPPED_BYTES:
        raise PayloadTooLargeError(
            f"The zipped shapefile holds more than {MAX_UNZIPPED_BYTES // (1024 * 1024)} MiB unpacked: send a "
            "simpler shape."
        )
    stems: dict[str, set[str]] = {}
    for entry in entries:
        stem, dot, suffix = entry.filename.rpartition(".")
        if dot:
            stems.setdefault(stem.lower(), set()).add("." + suffix.lower())
    if not any(set(_SHAPEFILE_PARTS) <= suffixes for suffixes in stems.values()):
        found = ", ".join(sorted(entry.filename for entry in entries)) or "nothing"
        raise RequestValidationError(
            f"The zipped shapefile holds no complete shapefile (it holds {found}): a shapefile needs its "
            ".shp, .shx and .dbf files side by side, and a .prj for any CRS other than WGS84. " + ACCEPTED
        )


def _to_wgs84(geometries: list[BaseGeometry], crs: str | None, name: str) -> list[BaseGeometry]:
    """Geometries in WGS84 lon/lat; without a CRS (a shapefile without .prj) they are taken as such."""
    if not crs or not geometries:
        return geometries
    import pyproj

    try:
        source = pyproj.CRS.from_user_input(crs)
    except pyproj.exceptions.CRSError as error:
        message = f"The {name}'s coordinate reference system cannot be read: {_describe(error)}. {ACCEPTED}"
        raise RequestValidationError(message) from None
    target = pyproj.CRS.from_epsg(4326)
    if source.equals(target, ignore_axis_order=True):
        return geometries
    transformer = pyproj.Transformer.from_crs(source, target, always_xy=True)

    def project(coordinates: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(coordinates[:, 0], coordinates[:, 1])
        return np.column_stack([x, y])

    return [shapely.transform(geometry, project) for geometry in geometries]


# -- every kind ----------------------------------------------------------------------------------


def _polygon_union(parts: list[BaseGeometry], name: str) -> BaseGeometry:
    """The union of every polygon, repaired if invalid; anything else is refused with the fix."""
    polygons: list[BaseGeometry] = []
    others: set[str] = set()
    for single in _flatten(parts):
        if single.geom_type in _POLYGONAL:
            polygons.append(single)
        else:
            others.add(single.geom_type)
    if others:
        raise RequestValidationError(
            f"The {name} holds {', '.join(sorted(others))} geometries, but shapes to subset by must be areas: "
            "send polygons or multipolygons only (buffer points and lines into polygons first)."
        )
    if not polygons:
        raise RequestValidationError(f"The {name} holds no polygon: it is empty. {ACCEPTED}")
    vertices = int(sum(shapely.get_num_coordinates(polygon) for polygon in polygons))
    if vertices > MAX_VERTICES:
        raise PayloadTooLargeError(
            f"The {name} has {vertices} vertices, more than the {MAX_VERTICES} geomesh accepts: simplify the shape "
            "(e.g. with mapshaper or shapely's simplify) and send it again."
        )
    coordinates = np.concatenate([shapely.get_coordinates(polygon) for polygon in polygons])
    if not np.isfinite(coordinates).all():
        raise RequestValidationError(f"The {name} has coordinates that are not finite numbers. {ACCEPTED}")
    west, south = coordinates.min(axis=0)
    east, north = coordinates.max(axis=0)
    if west < -180 - 1e-9 or east > 180 + 1e-9 or south < -90 - 1e-9 or north > 90 + 1e-9:
        raise RequestValidationError(
            f"The {name}'s coordinates reach {west:g},{south:g},{east:g},{north:g} (west,south,east,north), outside "
            "longitude -180..180 and latitude -90..90: GeoJSON and KML must be in WGS84 longitude/latitude, and a "
            "zipped shapefile in another CRS needs its .prj file."
        )
    geometry = shapely.union_all([shapely.make_valid(polygon) for polygon in polygons])
    geometry = _polygonal(geometry)
    if geometry.is_empty or geometry.area == 0:
        raise RequestValidationError(
            f"The {name}'s polygons enclose no area (they collapse to lines or points once repaired). {ACCEPTED}"
        )
    return geometry


def _flatten(parts: list[BaseGeometry]) -> list[BaseGeometry]:
    """Single geometries, collections (nested too) opened up, empty ones dropped."""
    found: list[BaseGeometry] = []
    for part in parts:
        for single in shapely.get_parts(part):
            if single.geom_type == "GeometryCollection":
                found.extend(_flatten([single]) if not single.is_empty else [])
            elif not single.is_empty:
                found.append(single)
    return found


def _polygonal(geometry: BaseGeometry) -> BaseGeometry:
    """Only the areas of a repaired geometry: make_valid may leave stray lines or points beside them."""
    if geometry.geom_type in _POLYGONAL:
        return geometry
    polygons = [part for part in shapely.get_parts(geometry) if part.geom_type in _POLYGONAL]
    return shapely.union_all(polygons) if polygons else shapely.geometry.Polygon()
