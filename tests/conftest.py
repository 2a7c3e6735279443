"""A real mesh for the tests: every service on 127.0.0.1 ephemeral ports, in this process, on demo data."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from catalog.demo.generate import generate_demo
from geomesh.settings import CatalogSettings, EdgeSettings, SchedulerSettings, TransformerSettings
from tests.loopback import serve_app

GLOBAL_GRANULE = "G1233800343-EEDTEST"
HARMONY_EXAMPLE = "C1233800302-EEDTEST"


@dataclass
class Mesh:
    url: str                 # the edge, e.g. http://127.0.0.1:40123
    catalog_address: str
    scheduler_address: str
    transformer_address: str
    data_dir: Path

    def coverages(self, collection: str = HARMONY_EXAMPLE) -> str:
        return f"{self.url}/{collection}/ogc-api-coverages/1.0.0"


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("demo")
    generate_demo(data_dir)
    return data_dir


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def mesh(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    from catalog.service import serve as serve_catalog
    from edge.app import create_app
    from scheduler.service import serve as serve_scheduler
    from transformers.gdal.service import serve as serve_transformer

    transformer = await serve_transformer(
        TransformerSettings(port=0, scratch_dir=tmp_path_factory.mktemp("scratch"), workers=2)
    )
    os.environ["GEOMESH_GDAL_ADDRESSES"] = transformer.address  # read by services.yml
    catalog = await serve_catalog(CatalogSettings(port=0, data_dir=demo_dir))
    scheduler = await serve_scheduler(SchedulerSettings(port=0, catalog_address=catalog.address))
    edge = create_app(EdgeSettings(port=0, scheduler_address=scheduler.address, catalog_address=catalog.address))
    try:
        async with serve_app(edge) as url:
            yield Mesh(url, catalog.address, scheduler.address, transformer.address, demo_dir)
    finally:
        for server in (scheduler, catalog, transformer):
            await server.stop(grace=1)
