"""WMS 1.3.0 GetFeatureInfo answers: the values under a map pixel as JSON, plain text or HTML.

JSON is a GeoJSON FeatureCollection (what QGIS' identify tool reads as features): one Point
feature per granule with data there, newest first, its properties the layer, the granule, its time
and each variable's stored value. No granule with data there: an empty collection.
"""

from __future__ import annotations

import html
import json
from datetime import UTC
from typing import TypedDict

from geomesh.v1 import transformer_pb2

JSON, TEXT, HTML = "application/json", "text/plain", "text/html"
INFO_FORMATS = (JSON, TEXT, HTML)


def feature_info(layer: str, samples: transformer_pb2.Samples, media_type: str) -> bytes:
    """The answer for one query layer in an INFO_FORMATS media type."""
    features = [_properties(layer, granule) for granule in samples.granules]
    if media_type == JSON:
        collection = {
            "type": "FeatureCollection",
            "features": [
                {"type": "Feature", "id": f["granule_id"], "geometry": {"type": "Point", "coordinates": [samples.lon, samples.lat]},
                 "properties": f}
                for f in features
            ],
        }
        return json.dumps(collection).encode()
    where = f"lon {samples.lon:.6f}, lat {samples.lat:.6f}"
    if media_type == TEXT:
        lines = [f"Layer {layer} at {where}:"]
        if not features:
            lines.append("  no data at this point")
        for f in features:
            lines.append(f"  granule {f['granule_id']} ({f['time_start']}/{f['time_end']})")
            lines.extend(f"    {name} = {value}" for name, value in f["values"].items())
        return ("\n".join(lines) + "\n").encode()
    rows = "".join(
        f"<tr><td>{html.escape(f['granule_id'])}</td><td>{html.escape(f['time_start'] or '')}</td>"
        f"<td>{html.escape(name)}</td><td>{value}</td></tr>"
        for f in features for name, value in f["values"].items()
    ) or '<tr><td colspan="4">no data at this point</td></tr>'
    return (
        f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(layer)}</title></head><body>"
        f"<h1>{html.escape(layer)} at {where}</h1><table><tr><th>granule</th><th>time</th><th>variable</th>"
        f"<th>value</th></tr>{rows}</table></body></html>"
    ).encode()


class _Properties(TypedDict):
    """A granule's feature properties, in the order they are written."""

    layer: str
    granule_id: str
    time_start: str | None
    time_end: str | None
    values: dict[str, int | float]


def _properties(layer: str, granule: transformer_pb2.GranuleSample) -> _Properties:
    values: dict[str, int | float] = {
        v.variable: int(v.value) if v.data_type.startswith(("int", "uint")) else v.value for v in granule.values
    }
    return {"layer": layer, "granule_id": granule.granule_id, "time_start": _time(granule, "start"),
            "time_end": _time(granule, "end"), "values": values}


def _time(granule: transformer_pb2.GranuleSample, end: str) -> str | None:
    if not granule.HasField("temporal") or not granule.temporal.HasField(end):
        return None
    stamp = getattr(granule.temporal, end).ToDatetime(tzinfo=UTC)
    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")
