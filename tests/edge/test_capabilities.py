"""GET /capabilities: Harmony's capabilities document, by concept id or short name, and its errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import requests
from harmony import Client, Environment
from harmony.request import CapabilitiesRequest

from catalog.cmr import CmrCatalog
from catalog.registry import Registry
from catalog.service import serve as serve_catalog
from edge.api import openapi
from edge.app import create_app
from geomesh.settings import CatalogSettings, EdgeSettings
from tests.cmr_replay import FIXTURES, fixtures_available, replay_cmr
from tests.conftest import ATL08, HARMONY_EXAMPLE, Mesh
from tests.edge.test_openapi import _check
from tests.loopback import serve_app


def _gdal() -> dict[str, Any]:
    """harmony/gdal as the registry (catalog/services.yml) describes it, in Harmony's words."""
    service = next(s for s in Registry.load().services if s.name == "harmony/gdal")
    capabilities = service.capabilities
    return {
        "name": "harmony/gdal",
        "capabilities": {
            "subsetting": capabilities.subsetting.model_dump(),
            "output_formats": capabilities.output_formats,
            "reprojection": capabilities.reprojection,
            "concatenation": capabilities.concatenation,
        },
    }


GDAL = _gdal()
FORMATS = GDAL["capabilities"]["output_formats"]


async def _get(mesh: Mesh, **params: str) -> requests.Response:
    return await asyncio.to_thread(requests.get, f"{mesh.url}/capabilities", params=params, timeout=30)


def _harmony_example(body: dict[str, Any]) -> None:
    assert {key: value for key, value in body.items() if key != "variables"} == {
        "conceptId": HARMONY_EXAMPLE,
        "shortName": "harmony_example",
        "variableSubset": True,
        "bboxSubset": True,
        "shapeSubset": True,
        "temporalSubset": False,
        "concatenate": False,
        "reproject": True,
        "outputFormats": FORMATS,
        "services": [GDAL],
        "capabilitiesVersion": "2",
    }
    # The local catalog is not CMR: no concept links.
    assert sorted(body["variables"], key=lambda v: v["name"]) == [
        {"name": name} for name in ("alpha_var", "blue_var", "green_var", "red_var")
    ]


@pytest.mark.parametrize("params", [{"collectionId": HARMONY_EXAMPLE}, {"shortName": "harmony_example"},
                                    {"collectionid": HARMONY_EXAMPLE, "VERSION": "2"}])
async def test_harmony_example(mesh: Mesh, params: dict[str, str]) -> None:
    answer = await _get(mesh, **params)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    _harmony_example(answer.json())
    _check(openapi.load_document(), "Capabilities", answer.json())


async def test_version_1_has_no_temporal_subset(mesh: Mesh) -> None:
    body = (await _get(mesh, collectionId=HARMONY_EXAMPLE, version="1")).json()
    assert body["capabilitiesVersion"] == "1" and "temporalSubset" not in body
    assert body["services"] == [GDAL]


async def test_a_collection_no_service_handles(mesh: Mesh) -> None:
    answer = await _get(mesh, collectionId=ATL08)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["conceptId"] == ATL08 and body["shortName"] == "ATL08"
    flags = ("variableSubset", "bboxSubset", "shapeSubset", "temporalSubset", "concatenate", "reproject")
    assert [body[flag] for flag in flags] == [False] * len(flags)
    assert (body["outputFormats"], body["services"]) == ([], [])
    _check(openapi.load_document(), "Capabilities", body)


@pytest.mark.parametrize(
    ("params", "status", "description"),
    [
        ({}, 400, "Error: Must specify either collectionId or shortName"),
        ({"collectionId": HARMONY_EXAMPLE, "shortName": "harmony_example"}, 400,
         "Error: Only one of collectionId or shortName may be given, not both"),
        ({"collectionId": HARMONY_EXAMPLE, "version": "3"}, 400, "Error: Invalid API version 3, supported versions: 1, 2"),
    ],
)
async def test_validation(mesh: Mesh, params: dict[str, str], status: int, description: str) -> None:
    answer = await _get(mesh, **params)
    assert (answer.status_code, answer.json()) == (status, {"code": "harmony.RequestValidationError", "description": description})


async def test_unknown_collection(mesh: Mesh) -> None:
    answer = await _get(mesh, collectionId="C0000000000-NOPE")
    assert answer.status_code == 404
    body = answer.json()
    assert body["code"] == "harmony.NotFoundError" and "C0000000000-NOPE" in body["description"]


async def test_a_user_is_needed_when_users_are_configured(secured: Mesh) -> None:
    assert (await _get(secured)).status_code == 401
    answer = await asyncio.to_thread(
        requests.get, f"{secured.url}/capabilities", params={"shortName": "harmony_example"},
        headers={"Authorization": "Bearer alice-token"}, timeout=30,
    )
    assert answer.status_code == 200, answer.text
    _harmony_example(answer.json())


async def test_harmony_py(secured: Mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALHOST_PORT", secured.url.rsplit(":", 1)[1])
    client = Client(env=Environment.LOCAL, token="alice-token")
    try:
        body = await asyncio.to_thread(client.submit, CapabilitiesRequest(collection_id=HARMONY_EXAMPLE))
        _harmony_example(body)
        body = await asyncio.to_thread(client.submit, CapabilitiesRequest(short_name="ATL08", capabilities_version="1"))
        assert (body["conceptId"], body["capabilitiesVersion"], body["services"]) == (ATL08, "1", [])
    finally:
        client.executor.shutdown(wait=False)


@pytest.mark.skipif(not fixtures_available(), reason=f"recorded CMR exchanges not found at {FIXTURES}")
async def test_variables_link_to_cmr_when_the_catalog_reads_it(mesh: Mesh) -> None:
    async with replay_cmr() as cmr_root:
        # Harmony's page size: what the recordings hold.
        backend = CmrCatalog(cmr_root, page_size=100)
        catalog = await serve_catalog(CatalogSettings(port=0, backend="cmr", cmr_url=cmr_root), backend=backend)
        try:
            app = create_app(EdgeSettings(port=0, scheduler_address=mesh.scheduler_address, catalog_address=catalog.address))
            async with serve_app(app) as url:
                answer = await asyncio.to_thread(
                    requests.get, f"{url}/capabilities", params={"collectionId": HARMONY_EXAMPLE}, timeout=30
                )
        finally:
            await catalog.stop(grace=1)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert {v["name"]: v["href"] for v in body["variables"]} == {
        name: f"{cmr_root}/search/concepts/{concept}"
        for name, concept in (("red_var", "V1233801695-EEDTEST"), ("green_var", "V1233801696-EEDTEST"),
                              ("blue_var", "V1233801716-EEDTEST"), ("alpha_var", "V1233801717-EEDTEST"))
    }
    assert body["services"] == [GDAL] and body["reproject"] is True
    _check(openapi.load_document(), "Capabilities", body)
