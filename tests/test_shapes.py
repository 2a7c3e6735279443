"""geomesh.shapes: every upload kind to one WGS84 polygonal geometry, and every refusal's message."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box

from geomesh.errors import PayloadTooLargeError, RequestValidationError
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
