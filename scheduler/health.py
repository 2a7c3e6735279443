"""The scheduler's health: what its requests need, checked on demand (CheckHealth, behind the edge's
GET /health), and the job store watched so that gRPC health says NOT_SERVING while it is unreachable
(probes then take the scheduler out of rotation; the jobs routes answer 503, see jobs.store.outage)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence

from grpc_health.v1 import health, health_pb2

from geomesh.metrics import DEPENDENCY_UP
from geomesh.v1 import catalog_pb2, catalog_pb2_grpc, scheduler_pb2
from scheduler.jobs.store import JobStore
from scheduler.staging import Stagings
from scheduler.transformer_pool import TransformerPool

log = logging.getLogger(__name__)

# Every check gives up after this long: a health answer must come back well within a probe's timeout.
CHECK_SECONDS = 3.0
# How often the job store is pinged for gRPC health.
WATCH_SECONDS = 5.0


class Health:
    def __init__(
        self, store: JobStore, stagings: Stagings, catalog: catalog_pb2_grpc.CatalogStub, transformers: TransformerPool
    ) -> None:
        self.store = store
        self.stagings = stagings
        self.catalog = catalog
        self.transformers = transformers
        # The registry as last listed: its transformers are still checked while the catalog is down.
        self._services: Sequence[catalog_pb2.Service] = ()
        self._watch: asyncio.Task[None] | None = None

    def start(self, servicer: health.aio.HealthServicer, service_names: Sequence[str]) -> None:
        self._watch = asyncio.create_task(self._watch_store(servicer, service_names))

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)

    async def report(self) -> scheduler_pb2.HealthReport:
        store, staging, catalog = await asyncio.gather(
            _checked("job store", self._store()),
            _checked("staging", self._staging()),
            _checked("catalog", self._catalog()),
        )
        return scheduler_pb2.HealthReport(dependencies=[store, staging, catalog, *await self._transformers()])

    async def _store(self) -> str:
        await self.store.ping()
        return "reachable"

    async def _staging(self) -> str:
        staging = self.stagings.default
        await staging.check_writable()
        free = await staging.free_bytes()
        return f"{staging.url} writable" + (f", {free / 1024**3:.1f} GiB free" if free is not None else "")

    async def _catalog(self) -> str:
        listed = await self.catalog.ListServices(catalog_pb2.ListServicesRequest(), timeout=CHECK_SECONDS)
        self._services = list(listed.services)
        return f"{len(self._services)} services in the registry"

    async def _transformers(self) -> list[scheduler_pb2.Dependency]:
        """One dependency per registry service; services sharing addresses are checked once."""
        checks: dict[tuple[str, ...], asyncio.Task[tuple[bool, str]]] = {}
        for service in self._services:
            key = tuple(service.addresses)
            if key not in checks:
                checks[key] = asyncio.create_task(self.transformers.health(list(key), CHECK_SECONDS))
        said = dict(zip(checks, await asyncio.gather(*checks.values())))
        return [
            scheduler_pb2.Dependency(name=f"transformers of {s.name}", up=said[tuple(s.addresses)][0], message=said[tuple(s.addresses)][1])
            for s in self._services
        ]

    async def _watch_store(self, servicer: health.aio.HealthServicer, service_names: Sequence[str]) -> None:
        """Ping the job store every WATCH_SECONDS; gRPC health follows it (only changes are logged)."""
        up: bool | None = None
        while True:
            dependency = await _checked("job store", self._store())
            if dependency.up != up:
                up = dependency.up
                status = health_pb2.HealthCheckResponse.SERVING if up else health_pb2.HealthCheckResponse.NOT_SERVING
                for name in ("", *service_names):
                    await servicer.set(name, status)
                DEPENDENCY_UP.labels("job_store").set(1 if up else 0)
                (log.info if up else log.error)("the job store is %s: %s", "reachable" if up else "unreachable", dependency.message)
            await asyncio.sleep(WATCH_SECONDS)


async def _checked(name: str, check: Awaitable[str]) -> scheduler_pb2.Dependency:
    """A check's outcome as a dependency: its message when it passed, what went wrong when not."""
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            return scheduler_pb2.Dependency(name=name, up=True, message=await check)
    except TimeoutError:
        return scheduler_pb2.Dependency(name=name, up=False, message=f"no answer within {CHECK_SECONDS:.0f} s")
    except Exception as error:  # noqa: BLE001 - whatever failed is what the report says
        details = getattr(error, "details", None)  # a gRPC error's own message
        text = details() if callable(details) else str(error)
        return scheduler_pb2.Dependency(name=name, up=False, message=(text or type(error).__name__).splitlines()[0])
