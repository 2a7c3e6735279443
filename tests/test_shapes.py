"""geomesh.shapes: every upload kind to one WGS84 polygonal geometry, and every refusal's message."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box

from geomesh.errors import PayloadTooLargeError, RequestValidationError
from geomesh.nesting import MAX_DEPTH, json_depth
from geomesh.shapes import (
    GEOJSON,
    KML,
    MAX_VERTICES,
    SHAPEFILE_ZIP,
    media_type_of,
    parse_shape,
)
from tests.shape_files import geojson, kml, zipped_shapefile

TRIANGLE = Polygon([(10, -10), (40, -10), (10, 20)])
SQUARE = box(50, 0, 60, 10)


def test_geojson_feature_collection_is_the_union_of_its_polygons() -> None:
    shape = parse_shape(geojson(TRIANGLE, SQUARE), GEOJSON, "area.geojson")
    assert shape.geometry.equals(MultiPolygon([TRIANGLE, SQUARE]))
    assert shape.bounds == (10, -10, 60, 20)
    assert shape.file_name == "area.geojson"


@pytest.mark.parametrize(
    "document",
    [
        shapely.geometry.mapping(TRIANGLE),
        {"type": "Feature", "properties": None, "geometry": shapely.geometry.mapping(TRIANGLE)},
        {"type": "GeometryCollection", "geometries": [shapely.geometry.mapping(TRIANGLE)]},
    ],
)
def test_geojson_feature_and_bare_geometry(document: dict) -> None:
    assert parse_shape(json.dumps(document).encode(), "application/json").geometry.equals(TRIANGLE)


def test_kml_layers_are_all_read() -> None:
    shape = parse_shape(kml(TRIANGLE, SQUARE), KML)
    assert shape.geometry.equals(MultiPolygon([TRIANGLE, SQUARE]))


def test_zipped_shapefile_in_wgs84() -> None:
    assert parse_shape(zipped_shapefile(TRIANGLE), SHAPEFILE_ZIP).geometry.equals(TRIANGLE)


def test_zipped_shapefile_prj_is_honoured() -> None:
    """Written in Web Mercator (its .prj says so): read back in degrees."""
    shape = parse_shape(zipped_shapefile(TRIANGLE, crs="EPSG:3857"), "application/zip", "area.zip")
    assert shape.bounds == pytest.approx((10, -10, 40, 20), abs=1e-9)
    assert shape.geometry.symmetric_difference(TRIANGLE).area < 1e-9


def test_zipped_shapefile_without_prj_is_taken_as_wgs84() -> None:
    assert parse_shape(zipped_shapefile(SQUARE, parts=("shp", "shx", "dbf")), SHAPEFILE_ZIP).bounds == (50, 0, 60, 10)


def test_kind_from_the_file_name_when_the_content_type_says_nothing() -> None:
    assert media_type_of(None, "Area.KML") == KML
    assert media_type_of("application/octet-stream", "area.shz") == SHAPEFILE_ZIP
    assert media_type_of("", "area.json") == GEOJSON
    assert media_type_of("application/geo+json; charset=utf-8", "x.zip") == GEOJSON  # the header wins
    assert parse_shape(kml(SQUARE), "application/octet-stream", "area.kml").bounds == (50, 0, 60, 10)


def test_self_intersecting_polygon_is_repaired() -> None:
    bowtie = Polygon([(0, 0), (10, 10), (10, 0), (0, 10), (0, 0)])
    shape = parse_shape(geojson(bowtie), GEOJSON)
    assert shape.geometry.is_valid and shape.geometry.area == pytest.approx(50)


def test_to_geojson_round_trips_exactly() -> None:
    odd = Polygon([(0.1, 0.2), (1 / 3, 0.2), (1 / 3, 2 / 7), (0.1, 0.2)])
    shape = parse_shape(geojson(odd), GEOJSON)
    assert parse_shape(shape.to_geojson(), GEOJSON).geometry.equals_exact(shape.geometry, tolerance=0)


@pytest.mark.parametrize(
    ("content", "media_type", "file_name", "message"),
    [
        (b'{"type": "FeatureCollection", "features": [', GEOJSON, "", "The shapefile upload is not valid GeoJSON: "),
        (b"[1, 2]", GEOJSON, "", 'expected a JSON object with a "type" member'),
        (b'{"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}', GEOJSON, "", "not valid GeoJSON"),
        (geojson(Point(1, 2), LineString([(0, 0), (1, 1)])), GEOJSON, "", "LineString, Point geometries"),
        (geojson(), GEOJSON, "", "holds no polygon: it is empty"),
        (b"", GEOJSON, "", "The shapefile upload is empty"),
        (geojson(box(0, 0, 1, 1).buffer(0).envelope.boundary), GEOJSON, "", "send polygons or multipolygons only"),
        (geojson(box(1e6, 0, 2e6, 1e6)), GEOJSON, "", "outside longitude -180..180 and latitude -90..90"),
        (b"a,b\n1,2\n", "text/csv", "area.csv", "of type text/csv is not a kind geomesh reads"),
        (b"a,b\n1,2\n", "", "area.csv", "named 'area.csv' is not a kind geomesh reads"),
        (b"{}", "application/octet-stream", "", "with neither a Content-Type nor a file name is not a kind"),
        (b"<kml>not closed", KML, "", "The shapefile upload is not a readable KML"),
        (b"PK not really", SHAPEFILE_ZIP, "", "is not a zip file"),
        (zipped_shapefile(SQUARE, parts=("shp", "prj")), SHAPEFILE_ZIP, "", "holds no complete shapefile"),
    ],
)
def test_bad_uploads_say_what_is_wrong(content: bytes, media_type: str, file_name: str, message: str) -> None:
    with pytest.raises(RequestValidationError) as caught:
        parse_shape(content, media_type, file_name)
    assert message in caught.value.message
    assert caught.value.http_status == 400


def test_every_refusal_names_the_accepted_kinds() -> None:
    with pytest.raises(RequestValidationError, match=r"Send a GeoJSON FeatureCollection of polygons, a KML file"):
        parse_shape(b"{", GEOJSON)
    with pytest.raises(RequestValidationError, match=r"application/vnd.google-earth.kml\+xml"):
        parse_shape(b"x", "image/png")


def test_too_many_vertices_is_a_413() -> None:
    angles = np.linspace(0, 2 * np.pi, MAX_VERTICES + 1, endpoint=False)
    circle = Polygon(np.column_stack([10 * np.cos(angles), 10 * np.sin(angles)]))
    with pytest.raises(PayloadTooLargeError, match=f"more than the {MAX_VERTICES} geomesh accepts: simplify") as caught:
        parse_shape(geojson(circle), GEOJSON)
    assert caught.value.http_status == 413


# Nesting deeper than Python's recursion limit was a 500 (RecursionError in json.loads, in the
# scheduler); a limit now refuses it, and deep-but-parseable nesting too, before any recursion.
@pytest.mark.parametrize(
    ("content", "depth"),
    [
        (b'{"type": "Polygon", "coordinates": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 100_001),
        (b'{"type": "Polygon", "coordinates": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", 5_001),
        (b'{"type": "Feature", "geometry": ' * 100_000 + b"null" + b"}" * 100_000, 100_000),
        (b'{"type": "Feature", "properties": ' + b'{"a": ' * 150 + b"1" + b"}" * 150 + b', "geometry": null}', 151),
        (b'{"type": "Polygon", "coordinates": ' + b"[" * 100_000, 100_001),  # not even closed
    ],
    ids=["coordinates 100000 deep", "coordinates 5000 deep", "features 100000 deep", "properties 150 deep", "unclosed"],
)
def test_geojson_nested_past_the_limit_is_refused_with_the_limit_named(content: bytes, depth: int) -> None:
    with pytest.raises(RequestValidationError) as caught:
        parse_shape(content, GEOJSON, "deep.geojson")
    assert caught.value.http_status == 400
    assert f"nests arrays and objects {depth} levels deep, beyond the limit of {MAX_DEPTH}" in caught.value.message


def test_geojson_within_the_limit_is_read() -> None:
    feature = {"type": "Feature", "properties": {"a": {"b": {"c": [[["[[[not counted in a string"]]]}}},
               "geometry": shapely.geometry.mapping(MultiPolygon([TRIANGLE, SQUARE]))}
    collection = json.dumps({"type": "FeatureCollection", "features": [feature]}).encode()
    assert json_depth(collection) == 9
    assert parse_shape(collection, GEOJSON).bounds == (10, -10, 60, 20)
    assert parse_shape(collection.decode().encode("utf-16"), GEOJSON).bounds == (10, -10, 60, 20)


def test_json_depth_skips_strings_and_reads_the_encodings_json_reads() -> None:
    assert json_depth("1") == 0
    assert json_depth('{"a": "[[{{", "b": [1, "\\"[["]}') == 2
    assert json_depth("[[[]]]".encode("utf-16")) == 3
    assert json_depth("[" * 10 + "]" * 10) == 10


@pytest.mark.parametrize(
    "inner",
    [
        "<Folder>" * 100_000 + "</Folder>" * 100_000,
        "<Placemark>" + "<MultiGeometry>" * 5_000 + "</MultiGeometry>" * 5_000 + "</Placemark>",
        "<Folder>" * 200 + "</Folder>" * 200,
    ],
    ids=["folders 100000 deep", "geometries 5000 deep", "folders 200 deep"],
)
def test_kml_nested_past_the_limit_is_refused_with_the_limit_named(inner: str) -> None:
    content = f'<?xml version="1.0"?><kml xmlns="http://www.opengis.net/kml/2.2"><Document>{inner}</Document></kml>'
    with pytest.raises(RequestValidationError) as caught:
        parse_shape(content.encode(), KML)
    assert f"The KML nests elements more than {MAX_DEPTH} levels deep" in caught.value.message


def test_kml_placemarks_outside_folders_are_read() -> None:
    """GDAL names that layer after the upload's in-memory copy, which had another name by the time
    it was read: the most common KML (a Document of Placemarks) was refused."""
    ring = " ".join(f"{x},{y}" for x, y in SQUARE.exterior.coords)
    content = (
        '<?xml version="1.0" encoding="UTF-8"?><kml xmlns="http://www.opengis.net/kml/2.2"><Document><Placemark>'
        f"<Polygon><outerBoundaryIs><LinearRing><coordinates>{ring}</coordinates></LinearRing></outerBoundaryIs>"
        "</Polygon></Placemark></Document></kml>"
    )
    assert parse_shape(content.encode(), KML).bounds == (50, 0, 60, 10)


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (b'<?xml version="1.0"?><kml xmlns="http://www.opengis.net/kml/2.2"><Document><Folder><name>x</name></Folder>'
         b"</Document></kml>", KML),
        (b"<html><body>not a KML file</body></html>", KML),
        (b"<kml>not closed", KML),
    ],
    ids=["no geometry", "not kml", "not well formed"],
)
def test_kml_errors_name_no_internal_files(content: bytes, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(RequestValidationError) as caught:
        parse_shape(content, kind)
    message = caught.value.message
    assert "/vsimem/" not in message and "pyogrio_" not in message, message
    assert message.startswith("The shapefile upload") or "KML" in message


@pytest.mark.parametrize("digits", [400, 5000], ids=["past float", "past int()"])
def test_huge_integer_coordinates_are_not_finite_numbers(digits: int) -> None:
    """A 400-digit integer overflowed float() in shapely (a 500); one of 5000 digits was refused with Python's advice."""
    content = b'{"type": "Polygon", "coordinates": [[[' + b"9" * digits + b", 0], [1, 0], [1, 1], [0, 0]]]}"
    with pytest.raises(RequestValidationError, match="has coordinates that are not finite numbers"):
        parse_shape(content, GEOJSON)
