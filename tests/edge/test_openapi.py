"""The served OpenAPI document: its two forms, its server URL, its validity, and that it matches the parser."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import OpenAPIV30SpecValidator

from edge.api import openapi
from edge.errors import error_middleware
from edge.rangeset import PARAMETERS, RangesetParameters, build_request
from geomesh.errors import RequestValidationError

COLLECTION = "C1233800302-EEDTEST"
RANGESET = "/collections/{variable}/coverage/rangeset"


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
    validator = OAS30Validator(document["components"]["schemas"]["Exception"])
    validator.validate(RequestValidationError('query parameter "width" should be integer').to_json())
    for response in document["components"]["responses"].values():
        content = response["content"]
        if "application/json" in content and "example" in content["application/json"]:
            validator.validate(content["application/json"]["example"])
