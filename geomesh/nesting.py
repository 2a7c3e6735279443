"""Nesting limits for the documents clients send (JSON bodies, GeoJSON and KML shapes).

Python's json module and the recursive code that walks a parsed document (shapely's `shape`,
`json.dumps`) give up with RecursionError somewhere near a thousand levels, and GDAL's KML reader
at its own limit with a message naming a /vsimem/ path. So the depth is measured first, without
recursion, and a document deeper than MAX_DEPTH is refused with the limit named. Real documents are
shallow: a GeoJSON MultiPolygon in a FeatureCollection is 9 levels deep, a KML polygon in a few
folders about 15.
"""

from __future__ import annotations

import json
import re
import xml.parsers.expat

import numpy as np

MAX_DEPTH = 100

# A JSON string, so that brackets inside strings are not counted (possessive: no backtracking).
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_STEPS = np.zeros(256, dtype=np.int8)
_STEPS[list(b"[{")] = 1
_STEPS[list(b"]}")] = -1


def json_depth(content: str | bytes) -> int:
    """How deeply arrays and objects nest in a JSON text (0 for a bare value), in linear time.

    Bytes are read in the encoding json.loads would detect (UTF-8, -16 or -32). Text that is not
    JSON gives some number: json.loads says what is wrong with it.
    """
    if isinstance(content, str):
        data = content.encode("utf-8", "surrogatepass")
    else:
        encoding = json.detect_encoding(content)
        try:
            data = content if encoding == "utf-8" else content.decode(encoding).encode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return 0
    steps = _STEPS[np.frombuffer(_JSON_STRING.sub(b"", data), dtype=np.uint8)]
    steps = steps[steps != 0]
    return int(np.cumsum(steps, dtype=np.int32).max(initial=0))


class TooDeep(ValueError):
    """An XML document nests elements deeper than the limit."""


def check_xml_depth(content: bytes, limit: int = MAX_DEPTH) -> None:
    """TooDeep when elements nest deeper than `limit`; xml.parsers.expat.ExpatError when the XML is
    not well formed. Read by expat as a stream, stopping at the first element too deep."""
    parser = xml.parsers.expat.ParserCreate()
    depth = 0

    def start(name: str, attributes: object) -> None:
        nonlocal depth
        depth += 1
        if depth > limit:
            raise TooDeep(f"elements nest more than {limit} levels deep")

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.Parse(content, True)
