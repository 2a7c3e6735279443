"""A real mesh for the tests: every service on 127.0.0.1 ephemeral ports, in this process, on demo data."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
import pytest_asyncio

from catalog.demo.generate import generate_demo
from geomesh.s3 import BucketSettings, S3Settings
from geomesh.settings import (
    TRANSFORMER_FAMILIES,
    CatalogSettings,
    EdgeSettings,
    SchedulerSettings,
    TransformerSettings,
)
from tests.loopback import serve_app
from tests.s3_server import S3Server, SeaweedFSMissing, start_seaweedfs

# Every service of the test mesh proves its identity with one secret (the mTLS tests make their own
# certificates), and transformers read only local files and the tests' own hosts.
os.environ.setdefault("GEOMESH_MESH_SECRET", secrets.token_hex(16))
os.environ.setdefault("GEOMESH_TRANSFORMER_ALLOWED_URLS", "file:///,http://127.0.0.1:,s3://")

GLOBAL_GRANULE = "G1233800343-EEDTEST"
HARMONY_EXAMPLE = "C1233800302-EEDTEST"
ATL08 = "C1229246405-NSIDC_TS1"
POSTGRES_ADMIN_URL = os.environ.get("GEOMESH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@dataclass
class Mesh:
    url: str                 # the edge, e.g. http://127.0.0.1:40123
    catalog_address: str
    scheduler_address: str
    transformer_address: str  # the gdal transformer's
    data_dir: Path
    staging_dir: Path  # a file:// staging URL's folder (the default)
    transformer_addresses: dict[str, str]  # by family
    database_url: str = ""  # the job store's
    servers: dict[str, Any] = dataclasses.field(default_factory=dict)  # the in-process servers, by name

    def coverages(self, collection: str = HARMONY_EXAMPLE) -> str:
        return f"{self.url}/{collection}/ogc-api-coverages/1.0.0"

    def rangeset(self, collection: str = HARMONY_EXAMPLE, variable: str = "all") -> str:
        return f"{self.coverages(collection)}/collections/{variable}/coverage/rangeset"


@asynccontextmanager
async def running_mesh(
    data_dir: Path,
    work_dir: Path,
    *,
    edge: dict[str, Any] | None = None,
    scheduler: dict[str, Any] | None = None,
    catalog: dict[str, Any] | None = None,
    transformer: dict[str, Any] | None = None,
    elsewhere: dict[str, str] | None = None,
) -> AsyncIterator[Mesh]:
    """Start the transformers, catalog, scheduler and edge on demo data in data_dir; stop them afterwards.

    `elsewhere`: transformer families served by processes of the test's own, by address."""
    from catalog.service import serve as serve_catalog
    from edge.app import create_app
    from scheduler.service import serve as serve_scheduler

    transformers = {}
    # The registry reads the addresses from the environment; another mesh's are put back at the end.
    saved = {key: os.environ.get(key) for key in (f"GEOMESH_{family.upper()}_ADDRESSES" for family in TRANSFORMER_FAMILIES)}
    for family, address in (elsewhere or {}).items():
        os.environ[f"GEOMESH_{family.upper()}_ADDRESSES"] = address
    for family in (family for family in TRANSFORMER_FAMILIES if family not in (elsewhere or {})):
        service = importlib.import_module(f"transformers.{family}.service")
        settings = TransformerSettings(**{"family": family, "port": 0, "scratch_dir": work_dir / "scratch"} | (transformer or {}))
        transformers[family] = await service.serve(settings)
        os.environ[f"GEOMESH_{family.upper()}_ADDRESSES"] = transformers[family].address  # read by services.yml
    addresses = {family: server.address for family, server in transformers.items()} | (elsewhere or {})
    catalog_server = await serve_catalog(CatalogSettings(port=0, data_dir=data_dir, **(catalog or {})))
    scheduler_settings = SchedulerSettings(
        **{"port": 0, "catalog_address": catalog_server.address, "data_dir": work_dir, "retry_delay_seconds": 0.05}
        | (scheduler or {})
    )
    running_scheduler = await serve_scheduler(scheduler_settings)
    app = create_app(
        EdgeSettings(port=0, scheduler_address=running_scheduler.address, catalog_address=catalog_server.address, **(edge or {}))
    )
    try:
        async with serve_app(app) as url:
            yield Mesh(
                url, catalog_server.address, running_scheduler.address, addresses["gdal"], data_dir,
                Path(unquote(urlparse(scheduler_settings.resolved_staging_url).path)), addresses,
                scheduler_settings.resolved_database_url,
                {"catalog": catalog_server, "scheduler": running_scheduler, **transformers},
            )
    finally:
        for server in (running_scheduler, catalog_server, *transformers.values()):
            await server.stop(grace=1)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("demo")
    generate_demo(data_dir)
    return data_dir


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def mesh(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    async with running_mesh(demo_dir, tmp_path_factory.mktemp("mesh")) as running:
        yield running


# Users of the `secured` edge: bearer tokens, one password (basic), one admin.
USERS = f"""
users:
  - name: alice
    tokens: [alice-token]
    password_sha256: {hashlib.sha256(b"wonderland").hexdigest()}
  - name: bob
    tokens: [bob-token]
  - name: root
    tokens: [root-token]
    admin: true
"""


@pytest_asyncio.fixture(loop_scope="session")
async def secured(mesh: Mesh, tmp_path: Path) -> AsyncIterator[Mesh]:
    """A second edge on the same mesh, with users configured."""
    from edge.app import create_app

    users_file = tmp_path / "users.yml"
    users_file.write_text(USERS)
    app = create_app(
        EdgeSettings(port=0, scheduler_address=mesh.scheduler_address, catalog_address=mesh.catalog_address, users_file=users_file)
    )
    async with serve_app(app) as url:
        yield dataclasses.replace(mesh, url=url)


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server (SeaweedFS) on 127.0.0.1 for the whole session, with auth enforced."""
    try:
        with start_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
            yield server
    except SeaweedFSMissing as missing:
        pytest.skip(f"no SeaweedFS: {missing}")


def s3_settings(server: S3Server, **buckets: BucketSettings) -> S3Settings:
    """geomesh's S3 settings for the test server (its admin identity), some buckets set apart."""
    return S3Settings(
        endpoint_url=server.endpoint_url, region=server.region,
        access_key_id=server.access_key_id, secret_access_key=server.secret_access_key, buckets=buckets,
    )


def new_bucket(server: S3Server) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    server.create_bucket(name)
    return name


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty job database: a SQLite file, or a new database on the local PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"
        return
    yield from _postgres_database()


def _postgres_database() -> AsyncIterator[str]:
    import asyncio

    import asyncpg

    name = f"geomesh_test_{uuid.uuid4().hex[:12]}"

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=3)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as error:
        pytest.skip(f"no PostgreSQL server at {POSTGRES_ADMIN_URL} ({error}); .ci/run starts one")
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
