"""Choosing what a WMS map draws: its WGS84 footprint and the granules' drawing order."""

from __future__ import annotations

import pytest

from geomesh.errors import RequestValidationError
from geomesh.rpc import open_channel, rpc_errors
from geomesh.v1 import (
    request_pb2,
    scheduler_pb2,
    scheduler_pb2_grpc,
    transformer_pb2,
    types_pb2,
)
from scheduler.maps import MAX_MAP_GRANULES, covering, drawing_order, footprint
from tests.conftest import HARMONY_EXAMPLE, Mesh

MERCATOR_EDGE = 20037508.342789244


def test_footprint_of_a_web_mercator_tile_and_of_the_whole_world() -> None:
    tile = footprint(transformer_pb2.RenderRequest(crs="EPSG:3857", min_x=0, min_y=0, max_x=MERCATOR_EDGE / 2, max_y=MERCATOR_EDGE / 2))
    assert (tile.west, tile.south) == pytest.approx((0, 0))
    assert (tile.east, tile.north) == pytest.approx((90, 66.513), abs=1e-3)
    world = footprint(transformer_pb2.RenderRequest(crs="CRS:84", min_x=-200, min_y=-100, max_x=200, max_y=100))
    assert (world.west, world.south, world.east, world.north) == (-180, -90, 180, 90)


def test_footprint_refuses_empty_extents_and_unknown_crs() -> None:
    with pytest.raises(RequestValidationError, match="min_x < max_x"):
        footprint(transformer_pb2.RenderRequest(crs="EPSG:4326", min_x=1, min_y=0, max_x=1, max_y=1))
    with pytest.raises(RequestValidationError, match="EPSG:999999"):
        footprint(transformer_pb2.RenderRequest(crs="EPSG:999999", min_x=0, min_y=0, max_x=1, max_y=1))


def test_covering_filters_as_the_catalog_does() -> None:
    africa = types_pb2.Granule(id="A", bbox=types_pb2.BBox(west=-25, south=-35, east=63, north=37))
    africa.temporal.start.FromSeconds(100)
    africa.temporal.end.FromSeconds(200)
    world = types_pb2.Granule(id="W", bbox=types_pb2.BBox(west=-180, south=-90, east=180, north=90))
    world.temporal.start.FromSeconds(300)
    world.temporal.end.FromSeconds(400)
    pacific = request_pb2.DataRequest(bbox=types_pb2.BBox(west=-170, south=-10, east=-120, north=10))
    assert [g.id for g in covering([africa, world], pacific)] == ["W"]
    early = request_pb2.DataRequest()
    early.temporal.start.FromSeconds(150)
    early.temporal.end.FromSeconds(160)
    assert [g.id for g in covering([africa, world], early)] == ["A"]
    assert [g.id for g in covering([africa, world], request_pb2.DataRequest(granule_ids=["W"]))] == ["W"]


def test_the_newest_granules_are_drawn_last() -> None:
    granules = []
    for hour in range(MAX_MAP_GRANULES + 4):
        granule = types_pb2.Granule(id=f"G{hour}")
        granule.temporal.start.FromSeconds(1_600_000_000 + 3600 * ((hour * 7) % (MAX_MAP_GRANULES + 4)))
        granules.append(granule)
    order = drawing_order(granules)
    starts = [g.temporal.start.seconds for g in order]
    assert len(order) == MAX_MAP_GRANULES and starts == sorted(starts)
    assert starts[-1] == max(g.temporal.start.seconds for g in granules)


async def test_get_map_draws_blank_where_no_granule_is_and_refuses_unknown_variables(mesh: Mesh) -> None:
    async with open_channel(mesh.scheduler_address, "scheduler") as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        render = transformer_pb2.RenderRequest(crs="EPSG:4326", min_x=-10, min_y=-10, max_x=10, max_y=10, width=8, height=8, format="image/png")
        lonely = scheduler_pb2.MapRequest(collection=HARMONY_EXAMPLE, granule_ids=["G0-NONE"], render=render)
        blank = await stub.GetMap(lonely)  # no granule there: a blank map
        assert blank.header.media_type == "image/png" and blank.content.startswith(b"\x89PNG")
        render.variables.append("purple_var")
        unknown = scheduler_pb2.MapRequest(collection=HARMONY_EXAMPLE, render=render)
        with pytest.raises(RequestValidationError, match="purple_var"), rpc_errors():
            await stub.GetMap(unknown)
