"""subset=time with open ends (*) selects granules by their time range, through a real mesh."""

from __future__ import annotations

import pytest
from rasterio.io import MemoryFile

from tests.conftest import Mesh
from tests.edge.test_coverages import get


@pytest.mark.parametrize(
    ("time", "name"),
    [
        # Only the last slot of the last day starts at or after 20:00 on 16 January.
        ('("2020-01-16T20:00:00Z":*)', "016_10_ff0000_south_america"),
        # Only the first global granule runs before 01:00 on 1 January.
        ('(*:"2020-01-01T01:00:00Z")', "001_00_7f00ff_global"),
    ],
)
async def test_an_open_end_selects_only_the_granules_within(mesh: Mesh, time: str, name: str) -> None:
    status, headers, body = await get(f"{mesh.rangeset()}?subset=time{time}")
    assert status == 200, body  # one granule: answered synchronously
    assert f'filename="{name}.tif"' in headers["Content-Disposition"]
    with MemoryFile(body) as memory, memory.open() as dataset:
        assert dataset.tags()["HARMONY_HEX_COLOR"] == name.split("_")[2]


async def test_a_range_open_at_both_ends_selects_every_granule(mesh: Mesh) -> None:
    status, _, body = await get(f"{mesh.rangeset()}?subset=time(*:*)&maxResults=1")
    assert status == 200, body  # maxResults=1 keeps it synchronous: the first granule of all
    with MemoryFile(body) as memory, memory.open() as dataset:
        assert dataset.tags()["HARMONY_HEX_COLOR"] == "7f00ff"
