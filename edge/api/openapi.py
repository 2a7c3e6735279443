"""The OpenAPI 3.0 document of each collection's OGC API - Coverages, at .../ogc-api-coverages/1.0.0/api.

YAML by default (Harmony's `text/openapi+yaml;version=3.0`), JSON with `?f=json` or an Accept header that
prefers JSON. The document is edge/api/openapi.yml with `servers` set to the URL the client called.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import json
from typing import Any

import yaml
from aiohttp import web

from edge.api.common import COVERAGES, root_url
from geomesh.errors import RequestValidationError

routes = web.RouteTableDef()

YAML_TYPE = "text/openapi+yaml;version=3.0"
JSON_TYPE = "application/vnd.oai.openapi+json;version=3.0"

_JSON_RANGES = frozenset({"application/json", "application/vnd.oai.openapi+json"})
_YAML_RANGES = frozenset(
    {"text/openapi+yaml", "application/openapi+yaml", "application/vnd.oai.openapi", "application/yaml",
     "application/x-yaml", "text/yaml", "text/x-yaml"}
)
_WILDCARDS = frozenset({"*/*", "text/*"})  # satisfied by the YAML default
_FORMATS = {"json": True, "yaml": False, "yml": False}


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line descriptions as readable `|` blocks rather than escaped one-liners."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


@functools.cache
def load_document() -> dict[str, Any]:
    """The document as written in openapi.yml (read once; callers must not modify it)."""
    text = importlib.resources.files("edge.api").joinpath("openapi.yml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def document_for(server_url: str) -> dict[str, Any]:
    document = copy.deepcopy(load_document())
    document["servers"] = [{"url": server_url}]
    return document


def wants_json(request: web.Request) -> bool:
    """`f` decides when given; otherwise JSON only if the Accept header ranks it above YAML."""
    f = request.query.get("f")
    if f is not None:
        choice = _FORMATS.get(f.strip().lower())
        if choice is None:
            raise RequestValidationError(f'query parameter "f" must be "yaml" or "json", not "{f}"')
        return choice
    return _accept_prefers_json(request.headers.get("Accept", ""))


def _accept_prefers_json(accept: str) -> bool:
    # Rank each side by (quality, named explicitly, earlier in the header); YAML wins ties on all three.
    best: dict[bool, tuple[float, bool, int]] = {}
    for index, item in enumerate(accept.split(",")):
        media_range, *options = (piece.strip() for piece in item.split(";"))
        media_range = media_range.lower()
        quality = 1.0
        for option in options:
            key, _, value = option.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality <= 0:
            continue
        if media_range in _JSON_RANGES:
            side, explicit = True, True
        elif media_range in _YAML_RANGES:
            side, explicit = False, True
        elif media_range in _WILDCARDS:
            side, explicit = False, False
        else:
            continue
        rank = (quality, explicit, -index)
        if side not in best or rank > best[side]:
            best[side] = rank
    return True in best and (False not in best or best[True] > best[False])


@routes.get("/{collectionId}/" + COVERAGES + "/api")
@routes.get("/{collectionId}/" + COVERAGES + "/api/")
async def api_definition(request: web.Request) -> web.Response:
    document = document_for(f"{root_url(request)}/{request.match_info['collectionId']}/{COVERAGES}")
    headers = {"Vary": "Accept"}
    if wants_json(request):
        body = json.dumps(document, ensure_ascii=False, indent=2)
        headers["Content-Type"] = JSON_TYPE
    else:
        body = yaml.dump(document, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=120)
        headers["Content-Type"] = YAML_TYPE
    return web.Response(body=body.encode("utf-8"), headers=headers)
