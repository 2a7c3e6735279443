"""The CMR backend against recorded CMR answers (replayed locally) and tiny fake CMRs for what they lack."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from catalog.backend import GranuleQuery
from catalog.cmr import CmrCatalog
from catalog.models import GranuleRecord
from geomesh.errors import (
    NotFoundError,
    RequestValidationError,
    ServiceUnavailableError,
)
from geomesh.model import BBox, TimeRange
from tests.cmr_replay import FIXTURES, fixtures_available, load_recordings, replay_cmr
from tests.loopback import serve_app

V1 = "C1233800302-EEDTEST"  # harmony_example v1
V2 = "C1234088182-EEDTEST"  # harmony_example v2
needs_recordings = pytest.mark.skipif(
    not fixtures_available(),
    reason=f"recorded CMR exchanges not found at {FIXTURES} (set GEOMESH_FIXTURES to the shared fixtures folder)",
)


@pytest.fixture(scope="session")
async def cmr_root() -> AsyncIterator[str]:
    if not fixtures_available():
        pytest.skip(f"recorded CMR exchanges not found at {FIXTURES}")
    async with replay_cmr() as root:
        yield root


@pytest.fixture
async def cmr(cmr_root: str) -> AsyncIterator[CmrCatalog]:
    catalog = CmrCatalog(cmr_root, page_size=100)  # Harmony's page size: what the recordings hold
    yield catalog
    await catalog.close()


async def collect(catalog: CmrCatalog, query: GranuleQuery) -> tuple[int, list[GranuleRecord]]:
    search = await catalog.search_granules(query)
    return search.hits, [granule async for granule in search.granules]


# -- against the recordings ------------------------------------------------------------------------


@needs_recordings
async def test_collection_by_concept_id(cmr: CmrCatalog) -> None:
    collection = await cmr.get_collection(V1)
    assert (collection.id, collection.short_name, collection.version) == (V1, "harmony_example", "1")
    assert collection.title == "Harmony Example Data"
    assert collection.provider == "EEDTEST"
    assert collection.summary.startswith("A collection to use in testing Harmony")
    assert collection.time_start == datetime(1970, 6, 26, tzinfo=UTC) and collection.time_end is None
    assert collection.bbox == (-180.0, -90.0, 180.0, 90.0)


@needs_recordings
async def test_collection_by_short_name_is_the_newest_revision(cmr: CmrCatalog) -> None:
    collection = await cmr.get_collection("harmony_example")
    assert (collection.id, collection.version, collection.title) == (V2, "2", "Harmony Example Data v2")
    assert collection.bbox == (-180.0, -90.0, 180.0, 90.0)  # no spatial extent: the whole world


@needs_recordings
async def test_variables(cmr: CmrCatalog) -> None:
    variables = {v.name: v for v in await cmr.list_variables(V1)}
    assert {name: v.id for name, v in variables.items()} == {
        "red_var": "V1233801695-EEDTEST",
        "green_var": "V1233801696-EEDTEST",
        "blue_var": "V1233801716-EEDTEST",
        "alpha_var": "V1233801717-EEDTEST",
    }
    red = variables["red_var"]
    assert (red.long_name, red.description, red.dimensions) == (
        "Red Channel",
        "Red channel value",
        ["Latitude", "Longitude"],
    )


@needs_recordings
async def test_granules_by_name_pattern(cmr: CmrCatalog) -> None:
    hits, granules = await collect(cmr, GranuleQuery(V1, granule_names=("001_*",)))
    assert hits == len(granules) == 12
    by_name = {g.name: g for g in granules}
    assert all(name.startswith("001_") for name in by_name)
    east = by_name["001_08_7f00ff_oceania_east"]
    assert east.id == "G1233800349-EEDTEST"
    assert (east.time_start, east.time_end) == (
        datetime(2020, 1, 1, 16, tzinfo=UTC),
        datetime(2020, 1, 1, 17, 59, 59, tzinfo=UTC),
    )
    assert east.bbox == (96.8, -52.6, 180.0, 19.4)  # from "S W N E"
    assert [(link.type, link.title) for link in east.links] == [
        ("application/x-netcdf", east.id),
        ("image/tiff", east.id),
    ]
    assert east.links[0].href.endswith("/C1233800302-EEDTEST/nc/001_08_7f00ff_oceania_east.nc")
    # No boxes, one polygon ("lat lon ..."): its extent.
    assert by_name["001_01_7f00ff_africa_poly"].bbox == (5.0, 34.0, 63.0, 37.0)


@needs_recordings
async def test_granules_by_exact_names_send_no_pattern_option(cmr: CmrCatalog) -> None:
    names = ("001_08_7f00ff_oceania_east", "001_03_7f00ff_asia_east")
    hits, granules = await collect(cmr, GranuleQuery(V1, granule_names=names))
    assert hits == 2 and sorted(g.name for g in granules) == sorted(names)


@needs_recordings
async def test_granule_by_id_with_bbox_and_time(cmr: CmrCatalog) -> None:
    query = GranuleQuery(
        V1,
        bbox=BBox(-20.1, 0, 20, 10),
        temporal=TimeRange(datetime(2020, 1, 2, tzinfo=UTC), datetime(2020, 1, 2, 1, tzinfo=UTC)),
        granule_ids=("G1233800352-EEDTEST",),
    )
    hits, granules = await collect(cmr, query)
    assert hits == 1 and [g.name for g in granules] == ["002_00_3200ff_global"]
    assert granules[0].bbox == (-180.0, -90.0, 180.0, 90.0)


@needs_recordings
async def test_no_match(cmr: CmrCatalog) -> None:
    assert await collect(cmr, GranuleQuery(V1, granule_ids=("G123-BOGUS",))) == (0, [])


@needs_recordings
async def test_limit_is_the_page_size_and_hits_the_total(cmr: CmrCatalog) -> None:
    hits, granules = await collect(cmr, GranuleQuery(V1, limit=4))
    assert hits == 177 and len(granules) == 4
    assert granules[0].name == "001_00_7f00ff_global"


@needs_recordings
async def test_antimeridian_box_is_kept(cmr: CmrCatalog) -> None:
    query = GranuleQuery(V2, bbox=BBox(-180, -90, 180, 90), granule_names=("2020_01_01_7f00ff_antimeridian",))
    _, [granule] = await collect(cmr, query)
    assert granule.bbox == (179.95, -89.95, 179.94, 89.95)  # west > east: crosses the antimeridian


@needs_recordings
async def test_unrecorded_request_is_refused_with_hints(cmr_root: str) -> None:
    async with CmrCatalog(cmr_root, page_size=7) as catalog:
        with pytest.raises(RequestValidationError, match=r"HTTP 404.*only in the request \['form page_size=7'\]"):
            await catalog.search_granules(GranuleQuery(V1))


# -- against small fake CMRs -----------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def fake_cmr(handler: Handler) -> AbstractAsyncContextManager[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return serve_app(app, shutdown_timeout=0.1)


def feed(entries: list[dict[str, Any]], hits: int, search_after: str | None = None) -> web.Response:
    headers = {"CMR-Hits": str(hits)}
    if search_after:
        headers["CMR-Search-After"] = search_after
    return web.json_response({"feed": {"entry": entries}}, headers=headers)


def granule_entry(n: int) -> dict[str, Any]:
    return {
        "id": f"G{n}-TEST",
        "title": f"granule_{n}",
        "time_start": "2020-01-01T00:00:00.000Z",
        "time_end": "2020-01-01T01:00:00.000Z",
        "boxes": ["0 0 10 10", "-5 20 5 30"],
        "links": [
            {"rel": "http://esipfed.org/ns/fedsearch/1.1/data#", "href": f"https://x/{n}.nc"},
            {"rel": "http://esipfed.org/ns/fedsearch/1.1/data#", "href": "https://x/all", "inherited": True},
            {"rel": "http://esipfed.org/ns/fedsearch/1.1/metadata#", "href": "https://x/meta"},
        ],
    }


async def test_paging_follows_search_after_lazily() -> None:
    seen: list[dict[str, Any]] = []
    pages = {None: ([0, 1], '["a",1]'), '["a",1]': ([2, 3], '["a",2]'), '["a",2]': ([4], '["a",3]')}

    async def handler(request: web.Request) -> web.Response:
        form = await request.post()
        cursor = request.headers.get("CMR-Search-After")
        seen.append({"cursor": cursor, "form": sorted(form.items()), "headers": dict(request.headers)})
        numbers, next_cursor = pages[cursor]
        return feed([granule_entry(n) for n in numbers], hits=5, search_after=next_cursor)

    async with fake_cmr(handler) as root:
        catalog = CmrCatalog(root, token="secret", page_size=2)
        search = await catalog.search_granules(GranuleQuery("C1-TEST"))
        assert search.hits == 5 and len(seen) == 1  # later pages only when iterated
        granules = [g async for g in search.granules]
        assert [g.id for g in granules] == [f"G{n}-TEST" for n in range(5)]
        assert [s["cursor"] for s in seen] == [None, '["a",1]', '["a",2]']
        assert all(s["form"] == [("collection_concept_id", "C1-TEST"), ("page_size", "2")] for s in seen)
        assert seen[0]["headers"]["Authorization"] == "Bearer secret"
        assert seen[0]["headers"]["Client-Id"] == "geomesh"
        assert seen[0]["headers"]["Content-Type"].startswith("multipart/form-data")
        granule = granules[0]
        assert granule.name == "granule_0"
        assert granule.bbox == (0.0, -5.0, 30.0, 10.0)  # the union of both boxes
        assert [link.href for link in granule.links] == ["https://x/0.nc"]  # own data links only

        seen.clear()
        search = await catalog.search_granules(GranuleQuery("C1-TEST", limit=3))
        assert len([g async for g in search.granules]) == 3 and len(seen) == 2  # page 3 never asked for
        await catalog.close()


async def test_collection_not_found() -> None:
    queries: list[list[tuple[str, str]]] = []

    async def handler(request: web.Request) -> web.Response:
        queries.append(list(request.query.items()))
        return feed([], hits=0)

    async with fake_cmr(handler) as root, CmrCatalog(root) as catalog:
        with pytest.raises(NotFoundError, match="C1234-MISSING must be a CMR collection"):
            await catalog.get_collection("C1234-MISSING")
        with pytest.raises(NotFoundError, match="no_such_short_name"):
            await catalog.list_variables("no_such_short_name")
    assert queries[0] == [("concept_id", "C1234-MISSING"), ("page_size", "100"), ("include_non_operational", "true")]
    assert ("short_name", "no_such_short_name") in queries[1] and ("sort_key", "-revisionDate") in queries[1]


async def test_cmr_rejection_is_a_validation_error() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"errors": ["Shapefile has no features"]}, status=400)

    async with fake_cmr(handler) as root, CmrCatalog(root) as catalog:
        with pytest.raises(RequestValidationError, match="Shapefile has no features"):
            await catalog.search_granules(GranuleQuery("C1-TEST"))


async def test_cmr_down_is_service_unavailable() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with CmrCatalog(f"http://127.0.0.1:{port}") as catalog:
        with pytest.raises(ServiceUnavailableError, match="unreachable"):
            await catalog.get_collection("C1-TEST")


async def test_cmr_errors_and_timeouts_are_service_unavailable() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("collections.json"):
            await asyncio.sleep(1)
        if "CMR-Search-After" in request.headers:
            return web.Response(status=503, text="<html>Service Unavailable</html>")
        return feed([granule_entry(0), granule_entry(1)], hits=4, search_after="[1]")

    async with fake_cmr(handler) as root, CmrCatalog(root, page_size=2, timeout=0.1) as catalog:
        with pytest.raises(ServiceUnavailableError, match="unreachable"):
            await catalog.get_collection("C1-TEST")
        search = await catalog.search_granules(GranuleQuery("C1-TEST"))
        with pytest.raises(ServiceUnavailableError, match="HTTP 503"):
            [g async for g in search.granules]


@needs_recordings
def test_recordings_parse() -> None:
    recordings = load_recordings()
    assert any(r.form and ("readable_granule_name", "001_*") in r.form for r in recordings)
    assert all(json.loads(r.body) is not None for r in recordings if r.body)
