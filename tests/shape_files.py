"""Shape uploads written by the tests themselves: GeoJSON, KML and zipped ESRI shapefiles."""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pyogrio.raw
import pyproj
import shapely
from shapely.geometry.base import BaseGeometry


def geojson(*geometries: BaseGeometry) -> bytes:
    features = [{"type": "Feature", "properties": {"n": n}, "geometry": shapely.geometry.mapping(g)} for n, g in enumerate(geometries)]
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()


def kml(*polygons: BaseGeometry) -> bytes:
    """One Placemark per polygon (outer rings only), each in a Folder of its own: several KML layers."""
    folders = []
    for n, polygon in enumerate(polygons):
        ring = " ".join(f"{x},{y}" for x, y in polygon.exterior.coords)
        folders.append(
            f"<Folder><name>f{n}</name><Placemark><name>p{n}</name><Polygon><outerBoundaryIs><LinearRing>"
            f"<coordinates>{ring}</coordinates></LinearRing></outerBoundaryIs></Polygon></Placemark></Folder>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><kml xmlns="http://www.opengis.net/kml/2.2"><Document>'
        + "".join(folders) + "</Document></kml>"
    ).encode()


def zipped_shapefile(*geometries: BaseGeometry, crs: str | None = "EPSG:4326", parts: tuple[str, ...] = ("shp", "shx", "dbf", "prj")) -> bytes:
    """A zip of one shapefile; geometries are given in WGS84 and written in `crs` (its .prj)."""
    if crs and crs != "EPSG:4326":
        transformer = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        geometries = tuple(
            shapely.transform(g, lambda c: np.column_stack(transformer.transform(c[:, 0], c[:, 1]))) for g in geometries
        )
    kind = "MultiPolygon" if any(g.geom_type == "MultiPolygon" for g in geometries) else geometries[0].geom_type
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "area.shp"
        pyogrio.raw.write(
            path,
            geometry=np.array([shapely.to_wkb(g) for g in geometries], dtype=object),
            field_data=[np.arange(len(geometries))],
            fields=["n"],
            crs=crs,
            geometry_type=kind,
            driver="ESRI Shapefile",
        )
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for suffix in parts:
                if (Path(folder) / f"area.{suffix}").exists():
                    archive.write(Path(folder) / f"area.{suffix}", f"area.{suffix}")
        return buffer.getvalue()
