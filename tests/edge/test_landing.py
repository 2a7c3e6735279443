"""Landing page, conformance and collections as the seed and OWSLib read them."""

from __future__ import annotations

import asyncio
import json

from owslib.ogcapi.coverages import Coverages
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import HARMONY_EXAMPLE, Mesh
from tests.edge.test_coverages import get


async def test_owslib_reads_landing_conformance_and_collections(mesh: Mesh) -> None:
    def read() -> tuple[list, dict, dict, list]:
        api = Coverages(mesh.coverages() + "/")
        return api.links, api.conformance(), api.collections(), api.coverages()

    links, conformance, collections, coverages = await asyncio.to_thread(read)
    assert {link["rel"] for link in links} == {"self", "service-desc", "conformance", "data"}
    assert "http://www.opengis.net/spec/ogcapi-coverages-1/1.0/conf/core" in conformance["conformsTo"]
    ids = [c["id"] for c in collections["collections"]]
    assert ids == [
        f"{HARMONY_EXAMPLE}/all",
        f"{HARMONY_EXAMPLE}/V1233801717-EEDTEST",
        f"{HARMONY_EXAMPLE}/V1233801716-EEDTEST",
        f"{HARMONY_EXAMPLE}/V1233801696-EEDTEST",
        f"{HARMONY_EXAMPLE}/V1233801695-EEDTEST",
    ]
    assert coverages == ids


async def test_collections_look_like_harmonys(mesh: Mesh) -> None:
    status, _, body = await get(mesh.coverages() + "/collections/")  # the seed's trailing slash
    assert status == 200
    listing = json.loads(body)
    alpha = listing["collections"][1]
    assert alpha["title"] == "alpha_var harmony_example v1"
    assert alpha["description"] == "Alpha channel  harmony_example v1 (EEDTEST)"
    assert alpha["extent"]["temporal"]["interval"] == ["1970-06-26T00:00:00.000Z", None]
    assert alpha["links"][0]["href"] == mesh.coverages() + "/collections/alpha_var/coverage/rangeset"
    assert [link["rel"] for link in listing["links"]] == ["root", "self"]


async def test_one_collection_by_name_id_and_listing_id(mesh: Mesh) -> None:
    for key in ("blue_var", "V1233801716-EEDTEST", f"{HARMONY_EXAMPLE}/V1233801716-EEDTEST"):
        status, _, body = await get(f"{mesh.coverages()}/collections/{key}")
        assert status == 200, body
        assert json.loads(body)["title"] == "blue_var harmony_example v1"
    status, _, body = await get(f"{mesh.coverages()}/collections/purple_var")
    assert status == 404 and json.loads(body)["code"] == "harmony.NotFoundError"


async def test_short_name_and_trailing_slashes_work(mesh: Mesh) -> None:
    for path in ("/harmony_example/ogc-api-coverages/1.0.0/", "/harmony_example/ogc-api-coverages/1.0.0/conformance/"):
        status, _, body = await get(mesh.url + path)
        assert status == 200, body
    status, _, body = await get(mesh.url + "/C0000000000-NOPE/ogc-api-coverages/1.0.0/")
    assert status == 404 and json.loads(body)["code"] == "harmony.NotFoundError"


async def test_unknown_route_is_a_json_404(mesh: Mesh) -> None:
    status, headers, body = await get(mesh.url + "/no/such/page")
    assert status == 404 and json.loads(body)["code"] == "harmony.NotFoundError"


async def test_metrics_are_prometheus_text(mesh: Mesh) -> None:
    await get(mesh.coverages() + "/conformance")
    status, _, body = await get(mesh.url + "/metrics")
    assert status == 200
    families = {family.name: family for family in text_string_to_metric_families(body.decode())}
    handled = families["geomesh_http_requests"]
    assert any(sample.labels["status"] == "200" for sample in handled.samples)
    assert "geomesh_grpc_server_handled" in families  # this process also runs the gRPC services
