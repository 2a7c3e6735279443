"""The served OpenAPI document: its two forms, its server URL, its validity, and that it matches the parser,
the edge's routes and the edge's real answers."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import requests
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from openapi_spec_validator import OpenAPIV30SpecValidator

from edge.api import openapi
from edge.api.common import COVERAGES
from edge.app import create_app
from edge.errors import error_middleware
from edge.rangeset import PARAMETERS, RangesetParameters, build_request
from geomesh.errors import RequestValidationError
from geomesh.settings import EdgeSettings
from tests.conftest import Mesh

COLLECTION = "C1233800302-EEDTEST"
RANGESET = "/collections/{variable}/coverage/rangeset"
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server() -> AsyncIterator[TestServer]:
    app = web.Application(middlewares=[error_middleware])
    app.add_routes(openapi.routes)
    async with TestServer(app, host="127.0.0.1") as test_server:
        yield test_server


@pytest_asyncio.fixture(loop_scope="session")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def _api_url(server: TestServer, suffix: str = "") -> str:
    return f"http://127.0.0.1:{server.port}/{COLLECTION}/ogc-api-coverages/1.0.0/api{suffix}"


async def _fetch(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[str, str]:
    async with session.get(url, **kwargs) as response:
        assert response.status == 200, await response.text()
        return response.headers["Content-Type"], await response.text()


def _deref(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow local $refs ("#/components/...") until a real node."""
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _operation_parameters(document: dict[str, Any], method: str) -> list[dict[str, Any]]:
    return [_deref(document, p) for p in document["paths"][RANGESET][method]["parameters"]]


async def test_yaml_is_the_default(server: TestServer, session: aiohttp.ClientSession) -> None:
    content_type, text = await _fetch(session, _api_url(server))
    assert content_type == "text/openapi+yaml;version=3.0"
    document = yaml.safe_load(text)
    assert document["openapi"] == "3.0.3"
    url = f"http://127.0.0.1:{server.port}/{COLLECTION}/ogc-api-coverages/1.0.0"
    assert document["servers"] == [{"url": url}]
    assert document == openapi.document_for(url)  # nothing lost in the YAML rendering


@pytest.mark.parametrize(
    ("suffix", "headers"),
    [
        ("?f=json", {}),
        ("/?f=JSON", {"Accept": "text/openapi+yaml"}),  # f wins over Accept; trailing slash works too
        ("", {"Accept": "application/json"}),
        ("", {"Accept": "application/vnd.oai.openapi+json;version=3.0, */*;q=0.1"}),
        ("", {"Accept": "text/openapi+yaml;q=0.5, application/json"}),
    ],
)
async def test_json_on_request(
    server: TestServer, session: aiohttp.ClientSession, suffix: str, headers: dict[str, str]
) -> None:
    content_type, text = await _fetch(session, _api_url(server, suffix), headers=headers)
    assert content_type == "application/vnd.oai.openapi+json;version=3.0"
    document = json.loads(text)
    assert document["servers"][0]["url"] == f"http://127.0.0.1:{server.port}/{COLLECTION}/ogc-api-coverages/1.0.0"
    assert document["paths"].keys() == openapi.load_document()["paths"].keys()


@pytest.mark.parametrize(
    "accept",
    [
        "*/*",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        "application/json;q=0.5, text/openapi+yaml",
        "text/openapi+yaml, application/json",
        "application/json;q=0",
    ],
)
async def test_yaml_unless_json_is_preferred(server: TestServer, session: aiohttp.ClientSession, accept: str) -> None:
    content_type, _ = await _fetch(session, _api_url(server), headers={"Accept": accept})
    assert content_type == "text/openapi+yaml;version=3.0"


async def test_f_yaml_wins_over_accept(server: TestServer, session: aiohttp.ClientSession) -> None:
    content_type, _ = await _fetch(session, _api_url(server, "?f=yaml"), headers={"Accept": "application/json"})
    assert content_type == "text/openapi+yaml;version=3.0"


async def test_unknown_f_is_a_harmony_error(server: TestServer, session: aiohttp.ClientSession) -> None:
    async with session.get(_api_url(server, "?f=xml")) as response:
        assert response.status == 400
        body = await response.json()
    assert body["code"] == "harmony.RequestValidationError"
    assert body["description"].startswith("Error: ")


def test_served_copies_leave_the_loaded_document_alone() -> None:
    served = openapi.document_for("http://example.org/C1/ogc-api-coverages/1.0.0")
    assert served["servers"] == [{"url": "http://example.org/C1/ogc-api-coverages/1.0.0"}]
    assert openapi.load_document()["servers"][0]["url"] == "{root}/{collectionId}/ogc-api-coverages/1.0.0"


def test_the_document_is_valid_openapi_3_0() -> None:
    document = openapi.document_for("http://127.0.0.1:8080/C1/ogc-api-coverages/1.0.0")
    errors = [f"{list(e.path)}: {e.message}" for e in OpenAPIV30SpecValidator(document).iter_errors()]
    assert errors == []
    # JSON-safe: no YAML timestamps or integer keys slipped in.
    assert json.loads(json.dumps(document)) == document


@pytest.mark.parametrize("method", ["get", "post"])
def test_every_rangeset_parameter_is_documented(method: str) -> None:
    document = openapi.load_document()
    query = {p["name"] for p in _operation_parameters(document, method) if p["in"] == "query"}
    assert query == set(PARAMETERS.values())
    path = [p["name"] for p in _operation_parameters(document, method) if p["in"] == "path"]
    assert path == ["variable"]


@pytest.mark.parametrize("media_type", ["application/x-www-form-urlencoded", "multipart/form-data"])
def test_every_rangeset_parameter_is_a_form_field(media_type: str) -> None:
    document = openapi.load_document()
    schema = _deref(document, document["paths"][RANGESET]["post"]["requestBody"]["content"][media_type]["schema"])
    fields: set[str] = set()
    for part in schema.get("allOf", [schema]):
        fields |= set(_deref(document, part)["properties"])
    extra = {"shapefile"} if media_type == "multipart/form-data" else set()
    assert fields == set(PARAMETERS.values()) | extra


def _examples(parameter: dict[str, Any]) -> list[Any]:
    if "example" in parameter:
        return [parameter["example"]]
    return [example["value"] for example in parameter.get("examples", {}).values()]


def _query_pairs(parameter: dict[str, Any], value: Any) -> list[tuple[str, str]]:
    def text(item: Any) -> str:
        return str(item).lower() if isinstance(item, bool) else str(item)

    if not isinstance(value, list):
        return [(parameter["name"], text(value))]
    if parameter.get("explode", parameter.get("style", "form") == "form"):
        return [(parameter["name"], text(item)) for item in value]
    return [(parameter["name"], ",".join(text(item) for item in value))]


def test_documented_examples_fit_their_schemas_and_the_parser() -> None:
    document = openapi.load_document()
    checked = 0
    for parameter in _operation_parameters(document, "get"):
        schema = _deref(document, parameter["schema"])
        for value in _examples(parameter):
            OAS30Validator(schema).validate(value)
            if parameter["in"] == "path":
                continue
            params = RangesetParameters.from_pairs(_query_pairs(parameter, value))
            variable_path = "parameter_vars" if parameter["name"] == "variable" else "all"
            build_request(params, COLLECTION, variable_path)  # raises if geomesh would refuse the example
            checked += 1
    assert checked >= 12


def test_the_error_schema_matches_geomesh_errors() -> None:
    document = openapi.load_document()
    validator = OAS30Validator(document["components"]["schemas"]["Error"])
    validator.validate(RequestValidationError('query parameter "width" should be integer').to_json())
    for response in document["components"]["responses"].values():
        content = response.get("content", {})
        if "application/json" in content and "example" in content["application/json"]:
            validator.validate(content["application/json"]["example"])


# -- the document against the edge's routes ------------------------------------------------------

# The two servers of the document: the coverages URL (top-level `servers`, the default) and the edge's root,
# which the jobs, STAC and download paths name as the relative server "/".
COVERAGES_SERVER = "coverages"
EDGE_ROOT = "/"
COVERAGES_PREFIX = "/{collectionId}/" + COVERAGES
# Left out on purpose: the Prometheus metrics, and the edge's own root page, whose path "/" the coverages
# landing page holds in the document (the info description mentions both).
UNDOCUMENTED = frozenset({(EDGE_ROOT, "/metrics"), (EDGE_ROOT, "/")})
# A path variable whose regex is a list of words (`{action:cancel|pause|...}`) is one documented path per word.
_WORD_CHOICES = re.compile(r"\(\?P<(\w+)>([\w-]+(?:\|[\w-]+)+)\)")


def _shape(path: str) -> str:
    """A path with its variables unnamed: the document may name them differently from the code."""
    return re.sub(r"\{[^{}]*\}", "{}", path)


def _registered_operations() -> dict[tuple[str, str], set[str]]:
    """(server, path shape) -> methods, for every route create_app registers (HEAD aside: aiohttp adds it to GETs)."""
    app = create_app(EdgeSettings(port=0))
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        resource = route.resource
        assert resource is not None
        paths = [re.sub(r"\{(\w+):[^{}]*\}", r"{\1}", resource.canonical)]
        pattern = resource.get_info().get("pattern")
        for name, words in _WORD_CHOICES.findall(pattern.pattern if pattern else ""):
            paths = [path.replace(f"{{{name}}}", word) for path in paths for word in words.split("|")]
        for path in paths:
            if path.startswith(COVERAGES_PREFIX):
                found[(COVERAGES_SERVER, path.removeprefix(COVERAGES_PREFIX))].add(route.method)
            else:
                found[(EDGE_ROOT, path)].add(route.method)
    # A trailing-slash twin of a route answers the same: it is documented by its twin.
    for server, path in list(found):
        if path.endswith("/") and (server, path[:-1]) in found:
            assert found[(server, path)] == found[(server, path[:-1])], path
            del found[(server, path)]
    if (COVERAGES_SERVER, "") in found:  # the landing page is the coverages URL itself
        found[(COVERAGES_SERVER, "/")] = found.pop((COVERAGES_SERVER, ""))
    return {
        (server, _shape(path)): methods
        for (server, path), methods in found.items()
        if (server, path) not in UNDOCUMENTED
    }


def _server_of(path: str, item: dict[str, Any]) -> str:
    if "servers" not in item:
        return COVERAGES_SERVER
    assert [server["url"] for server in item["servers"]] == [EDGE_ROOT], path
    return EDGE_ROOT


def _documented_operations(document: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    return {
        (_server_of(path, item), _shape(path)): {method.upper() for method in item if method in HTTP_METHODS}
        for path, item in document["paths"].items()
    }


def test_every_route_is_documented_with_its_methods() -> None:
    registered = _registered_operations()
    documented = _documented_operations(openapi.load_document())
    assert len(registered) >= 18  # the mapping above found the routes it should
    missing = {key: methods - documented.get(key, set()) for key, methods in registered.items()}
    extra = {key: methods - registered.get(key, set()) for key, methods in documented.items()}
    assert {key: methods for key, methods in missing.items() if methods} == {}, "routes the document lacks"
    assert {key: methods for key, methods in extra.items() if methods} == {}, "documented operations the edge lacks"


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    return [
        (path, method, item, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def _needs_user(document: dict[str, Any], operation: dict[str, Any]) -> bool:
    return operation.get("security", document["security"]) != []


def test_security_is_global_and_401_is_documented_where_a_user_is_needed() -> None:
    document = openapi.load_document()
    assert document["security"] == [{"bearer": []}, {"basic": []}]
    schemes = document["components"]["securitySchemes"]
    assert (schemes["bearer"]["scheme"], schemes["basic"]["scheme"]) == ("bearer", "basic")
    assert "single-user" in document["info"]["description"]
    for path, method, _, operation in _operations(document):
        assert ("401" in operation["responses"]) == _needs_user(document, operation), f"{method} {path}"


def _example(document: dict[str, Any], node: dict[str, Any]) -> Any:
    node = _deref(document, node)
    if "example" in node:
        return node["example"]
    if "examples" in node:
        return next(iter(node["examples"].values()))["value"]
    return _deref(document, node["schema"])["example"] if "schema" in node else None


def _example_request(
    document: dict[str, Any], base: str, path: str, item: dict[str, Any], operation: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The URL with the documented examples in its path, and the documented JSON body example if any."""
    for parameter in [_deref(document, p) for p in item.get("parameters", []) + operation.get("parameters", [])]:
        if parameter["in"] == "path":
            path = path.replace(f"{{{parameter['name']}}}", str(_example(document, parameter)))
    options: dict[str, Any] = {}
    body = _deref(document, operation.get("requestBody", {}))
    if "application/json" in body.get("content", {}):
        options["json"] = _example(document, body["content"]["application/json"])
    elif "application/x-www-form-urlencoded" in body.get("content", {}):
        # An empty form; without a Content-Type aiohttp reads a body as application/octet-stream.
        options["headers"] = {"Content-Type": "application/x-www-form-urlencoded"}
    return base + path, options


async def test_credentials_are_asked_for_exactly_where_documented(secured: Mesh) -> None:
    """Without credentials, an edge with users answers 401 on the operations documented to need a user, only."""
    document = openapi.load_document()
    for path, method, item, operation in _operations(document):
        base = secured.url if _server_of(path, item) == EDGE_ROOT else secured.coverages()
        url, options = _example_request(document, base, path, item, operation)
        response = await asyncio.to_thread(
            requests.request, method, url, allow_redirects=False, timeout=30, **options
        )
        expected = _needs_user(document, operation)
        answer = f"{method} {url}: {response.status_code} {response.text[:200]}"
        assert (response.status_code == 401) == expected, answer
        if not expected:
            assert response.status_code == 200, f"{answer}: the documented examples should work"


# -- real answers against their schemas -------------------------------------------------------------


def _undocumented_fields(document: dict[str, Any], schema: dict[str, Any], value: Any, where: str = "$") -> list[str]:
    """Fields of `value` its schema does not name (the schemas allow extras; the edge should send none)."""
    schema = _deref(document, schema)
    found: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key in schema["properties"]:
                found += _undocumented_fields(document, schema["properties"][key], item, f"{where}.{key}")
            elif "additionalProperties" not in schema:
                found.append(f"{where}.{key}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            found += _undocumented_fields(document, schema["additionalProperties"], item, f"{where}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found += _undocumented_fields(document, schema["items"], item, f"{where}[{index}]")
    return found


def _check(document: dict[str, Any], name: str, value: Any) -> None:
    """`value` is valid against components/schemas/`name` (formats included) and has no undocumented field."""
    schema = {"allOf": [{"$ref": f"#/components/schemas/{name}"}], "components": document["components"]}
    OAS30Validator(schema, format_checker=oas30_format_checker).validate(value)
    assert _undocumented_fields(document, document["components"]["schemas"][name], value) == []


async def _get(url: str, **options: Any) -> requests.Response:
    return await asyncio.to_thread(requests.get, url, allow_redirects=False, timeout=30, **options)


async def test_a_real_job_fits_the_job_schemas(mesh: Mesh) -> None:
    document = openapi.load_document()
    created = await _get(f"{mesh.url}/{COLLECTION}/{COVERAGES}/collections/all/coverage/rangeset?maxResults=2")
    assert created.status_code == 303, created.text
    job_id = created.json()["jobID"]
    assert created.headers["Location"] == f"{mesh.url}/jobs/{job_id}"
    _check(document, "Job", created.json())

    answer = await _get(f"{mesh.url}/jobs/{job_id}")
    assert answer.status_code == 200
    _check(document, "Job", answer.json())

    deadline = time.monotonic() + 30
    while (job := (await _get(f"{mesh.url}/jobs/{job_id}")).json())["status"] != "successful":
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
        await asyncio.sleep(0.05)
    _check(document, "Job", job)  # now with data links (bbox, temporal) and the STAC catalog link
    assert {"data", "stac-catalog-json"} <= {link["rel"] for link in job["links"]}

    listing = await _get(f"{mesh.url}/jobs?limit=1")
    _check(document, "JobListing", listing.json())
    assert int(listing.headers["Harmony-Hits"]) == listing.json()["count"]
    statuses = await asyncio.to_thread(requests.post, f"{mesh.url}/jobs/status", json={"jobIDs": [job_id]}, timeout=30)
    _check(document, "JobStatuses", statuses.json())
    labelled = await asyncio.to_thread(requests.put, f"{mesh.url}/labels?jobID={job_id}&label=OpenAPI", timeout=30)
    assert labelled.status_code == 201
    _check(document, "LabelsChanged", labelled.json())

    catalog = await _get(f"{mesh.url}/stac/{job_id}/")
    _check(document, "StacCatalog", catalog.json())
    item = await _get(f"{mesh.url}/stac/{job_id}/0")
    _check(document, "StacItem", item.json())
    assert item.json()["geometry"]["type"] == "Polygon"
