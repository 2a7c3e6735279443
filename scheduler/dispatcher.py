"""The dispatcher: leases work items from the job store, runs them on transformers, stages outputs.

Each scheduler runs one. Items are leased for `lease_seconds` and the lease is renewed while the
item runs, so if this scheduler dies its items are run again by whichever scheduler leases next.
An output is recorded only by the lease holder, once, in the same transaction that ends its item.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import uuid
from contextlib import suppress
from datetime import timedelta

import grpc

from geomesh import logs, tracing
from geomesh.errors import GatewayTimeoutError, GeomeshError, TooManyRequestsError, TransformError
from geomesh.metrics import (
    DB_CONNECTIONS,
    JOBS,
    STAGING_FREE_BYTES,
    WORK_ITEM_OUTCOMES,
    WORK_ITEM_SECONDS,
    WORK_ITEMS_FINISHED,
    WORK_ITEMS_IN_FLIGHT,
    WORK_ITEMS_QUEUED,
)
from geomesh.model import BBox, TimeRange
from geomesh.rpc import REQUEST_ID_KEY, rpc_errors
from geomesh.settings import SchedulerSettings
from geomesh.v1 import catalog_pb2, catalog_pb2_grpc, request_pb2, types_pb2
from scheduler.jobs.states import JobStatus
from scheduler.jobs.store import JobStore, Lease, NewLink, utcnow
from scheduler.planner import work_item
from scheduler.staging import StagedKey, Stagings
from scheduler.transformer_pool import TransformerPool, TransformersUnreachable

log = logging.getLogger(__name__)
GAUGES_SECONDS = 2.0


class Dispatcher:
    def __init__(
        self,
        store: JobStore,
        stagings: Stagings,
        pool: TransformerPool,
        catalog: catalog_pb2_grpc.CatalogStub,
        settings: SchedulerSettings,
    ) -> None:
        self.store = store
        self.stagings = stagings
        self.pool = pool
        self.catalog = catalog
        # Transformer addresses per job, asked of the registry once per scheduler process.
        self._addresses: dict[str, list[str]] = {}
        self.settings = settings
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lease_for = timedelta(seconds=settings.lease_seconds)
        self._running: dict[int, tuple[str, asyncio.Task[None]]] = {}  # item id -> (job id, task)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Finished outputs waiting to be recorded; the recorder commits whatever has gathered.
        self._outputs: asyncio.Queue[tuple[int, NewLink, asyncio.Future[bool]]] = asyncio.Queue()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._lease_loop()),
            asyncio.create_task(self._renew_loop()),
            asyncio.create_task(self._record_loop()),
            asyncio.create_task(self._gauges_loop()),
        ]

    def wake(self) -> None:
        """New or resumed work: look for it now rather than at the next poll."""
        self._wake.set()

    def stop_job(self, job_id: str) -> None:
        """A canceled job's items in flight stop at once (the store has already canceled them)."""
        for item_job, task in list(self._running.values()):
            if item_job == job_id:
                task.cancel()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        running = dict(self._running)
        for _, task in running.values():
            task.cancel()
        await asyncio.gather(*self._tasks, *(task for _, task in running.values()), return_exceptions=True)
        # Hand unfinished items back so a restart (or another scheduler) takes them without waiting.
        with suppress(Exception):
            await self.store.release(self.owner, list(running))

    async def _lease_loop(self) -> None:
        poll = min(1.0, self.settings.lease_seconds / 3)
        while True:
            self._wake.clear()
            free = self.settings.dispatch_slots - len(self._running)
            leases: list[Lease] = []
            if free > 0:
                try:
                    leases = await self.store.lease(self.owner, free, self._lease_for)
                except Exception:  # the database may be restarting: try again at the next poll
                    log.exception("leasing work items failed")
            for lease in leases:
                task = asyncio.create_task(self._run(lease))
                self._running[lease.item_id] = (lease.job_id, task)
                WORK_ITEMS_IN_FLIGHT.labels(lease.service).inc()
                task.add_done_callback(functools.partial(self._finished, lease))
            if len(leases) < free or free <= 0:
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), poll)

    def _finished(self, lease: Lease, _task: asyncio.Task[None]) -> None:
        if self._running.pop(lease.item_id, None) is not None:
            WORK_ITEMS_IN_FLIGHT.labels(lease.service).dec()
        self._wake.set()

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_seconds / 3)
            try:
                await self.store.renew(self.owner, list(self._running), self._lease_for)
            except Exception:
                log.exception("renewing leases failed")

    async def _gauges_loop(self) -> None:
        """What the job store holds (the same in every scheduler), every GAUGES_SECONDS."""
        services: set[str] = set()
        listed = False
        while True:
            try:
                if not listed:  # every registry service reports from the start: 0, not absent
                    registry = await self._registry_services()
                    services |= registry or set()
                    listed = registry is not None
                queued = await self.store.queued()
                services |= queued.keys()
                for service in services:  # a service whose queue emptied reports 0, not its last count
                    WORK_ITEMS_QUEUED.labels(service).set(queued.get(service, 0))
                by_status = await self.store.jobs_by_status()
                for status in JobStatus:
                    JOBS.labels(status.value).set(by_status.get(status.value, 0))
                in_use, idle = self.store.connections()
                DB_CONNECTIONS.labels("in_use").set(in_use)
                DB_CONNECTIONS.labels("idle").set(idle)
                free = await self.stagings.default.free_bytes()
                if free is not None:
                    STAGING_FREE_BYTES.labels(self.stagings.default.backend).set(free)
            except Exception as error:  # the store restarting: the next round tries again
                log.warning("reading the job store's gauges failed: %s", error)
            await asyncio.sleep(GAUGES_SECONDS)

    async def _registry_services(self) -> set[str] | None:
        """The registry's service names, their outcome counters made at 0; None if the catalog did not answer."""
        try:
            listed = await self.catalog.ListServices(catalog_pb2.ListServicesRequest(), timeout=5)
        except (grpc.RpcError, GeomeshError):  # the catalog not up yet: the next round asks again
            return None
        names = {service.name for service in listed.services}
        for name in names:
            for outcome in WORK_ITEM_OUTCOMES:
                WORK_ITEMS_FINISHED.labels(name, outcome)
        return names

    async def _run(self, lease: Lease) -> None:
        granule = types_pb2.Granule.FromString(lease.granule)
        logs.job_id.set(lease.job_id)  # this task's log lines name the job; its transformer call is one trace
        with tracing.current(tracing.server_span("scheduler/work item", {}, **{"geomesh.job_id": lease.job_id, "geomesh.granule": granule.id})):
            await self._run_item(lease, granule)

    async def _run_item(self, lease: Lease, granule: types_pb2.Granule) -> None:
        limit = self.settings.work_item_timeout_seconds
        try:
            with WORK_ITEM_SECONDS.labels(lease.service).time():
                if lease.attempts > self.settings.max_attempts:
                    # Leased again after its schedulers kept stopping mid-item: do not try forever.
                    raise TransformError(f"abandoned after {self.settings.max_attempts} attempts")
                try:
                    async with asyncio.timeout(limit):  # past it, the lease is no longer renewed either
                        link = await self._transform(lease, granule)
                except TimeoutError:
                    raise GatewayTimeoutError(f"the transformation took longer than {limit:g} s") from None
        except asyncio.CancelledError:
            raise
        except (TransformersUnreachable, TooManyRequestsError):
            # Every replica is down (restarting, say) or full: wait for one without spending the item's attempts.
            delay = min(10.0, self.settings.retry_delay_seconds * 2)
            log.warning("job %s granule %s: no transformer free or reachable, trying again in %g s", lease.job_id, granule.id, delay)
            WORK_ITEMS_FINISHED.labels(lease.service, "waiting").inc()
            await self.store.release(self.owner, [lease.item_id], not_before=utcnow() + timedelta(seconds=delay))
            return
        except Exception as error:
            await self._failed(lease, granule, error)
            return
        recorded: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._outputs.put_nowait((lease.item_id, link, recorded))
        # The item keeps its slot (and its lease renewed) until its output is committed.
        try:
            kept = await recorded
        except Exception:  # logged by the recorder; the lease runs out and the item runs again
            kept = False
        WORK_ITEMS_FINISHED.labels(lease.service, "successful" if kept else "lost").inc()

    async def _record_loop(self) -> None:
        """Commit finished outputs in batches: one transaction for all that finished meanwhile."""
        while True:
            batch = [await self._outputs.get()]
            while not self._outputs.empty() and len(batch) < 64:
                batch.append(self._outputs.get_nowait())
            try:
                recorded = await self.store.complete_many(self.owner, [(item_id, link) for item_id, link, _ in batch])
            except Exception as error:  # the database may be restarting: the leases run out, items run again
                log.exception("recording %d outputs failed", len(batch))
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for item_id, _, future in batch:
                if not future.done():
                    future.set_result(item_id in recorded)

    async def _transform(self, lease: Lease, granule: types_pb2.Granule) -> NewLink:
        request = request_pb2.DataRequest.FromString(lease.data_request)
        assert lease.service_match is not None  # only direct-download jobs have none, and no items to lease
        match = catalog_pb2.ServiceMatch.FromString(lease.service_match)
        item = work_item(request, granule, match, job_id=lease.job_id)
        chunks = self.pool.transform(await self._replicas(lease.job_id, request, match), item)
        try:
            first = await anext(chunks)
            if first.WhichOneof("item") != "header":
                raise TransformError("the transformer sent data before the output's header")
            header = first.header
            key = StagedKey.of(lease.job_id, lease.item_id, header.file_name)
            staging = self.stagings.for_destination(request.destination_url)
            async with staging.writer(key, header.media_type) as out:
                async for chunk in chunks:
                    await out.write(chunk.data)
        finally:
            await chunks.aclose()
        # Staged here: every edge serves it. In the user's bucket: its s3:// URL, as Harmony links it.
        href = key.href if staging is self.stagings.default else (staging.s3_url(key) or key.href)
        temporal = TimeRange.from_proto(header.temporal) if header.HasField("temporal") else None
        bbox = BBox.from_proto(header.bbox) if header.HasField("bbox") else None
        return NewLink(
            href=href,
            title=header.file_name,
            type=header.media_type,
            bbox=(bbox.west, bbox.south, bbox.east, bbox.north) if bbox else None,
            time_start=temporal.start if temporal else None,
            time_end=temporal.end if temporal else None,
        )

    async def _replicas(self, job_id: str, request: request_pb2.DataRequest, stored: catalog_pb2.ServiceMatch) -> list[str]:
        """The service's replicas now, as the registry gives them (a job outlives the addresses it was
        created with); the job's own record of them while the catalog cannot be reached."""
        if job_id not in self._addresses:
            try:
                with rpc_errors():
                    match = await self.catalog.MatchService(request, metadata=((REQUEST_ID_KEY, request.request_id),))
            except GeomeshError as error:
                if not error.transient:
                    raise
                log.warning("job %s: the catalog is unreachable (%s); using the addresses stored with the job", job_id, error.message)
                return list(stored.service.addresses)
            if match.WhichOneof("result") != "service":
                raise TransformError(f"no service transforms {request.collection} any more")
            if len(self._addresses) >= 1024:  # forget the oldest job's: it is asked again if still running
                del self._addresses[next(iter(self._addresses))]
            self._addresses[job_id] = list(match.service.addresses)
        return self._addresses[job_id]

    async def _failed(self, lease: Lease, granule: types_pb2.Granule, error: Exception) -> None:
        if isinstance(error, GeomeshError):
            geomesh_error, retryable = error, error.transient
        else:  # something of ours broke (a full disk, a store restarting): worth another try
            log.error("job %s granule %s failed unexpectedly", lease.job_id, granule.id, exc_info=error)
            geomesh_error, retryable = TransformError(str(error) or type(error).__name__), True
        retry_at = None
        if retryable and lease.attempts < self.settings.max_attempts:
            retry_at = utcnow() + timedelta(seconds=self.settings.retry_delay_seconds * 2 ** (lease.attempts - 1))
        log.warning(
            "job %s granule %s attempt %d failed%s: %s",
            lease.job_id, granule.id, lease.attempts, ", will retry" if retry_at else "", geomesh_error.message,
        )
        WORK_ITEMS_FINISHED.labels(lease.service, "retried" if retry_at else "failed").inc()
        await self.store.fail(
            self.owner,
            lease.item_id,
            url=_public_url(granule),
            message=f"{granule.id} ({granule.name}): {geomesh_error.message}",
            retry_at=retry_at,
        )


def _public_url(granule: types_pb2.Granule) -> str:
    """The granule as the error names it: its data link, unless that is a path on this machine."""
    href = granule.links[0].href if granule.links else ""
    return href if href.startswith(("http://", "https://", "s3://", "/data/")) else granule.id
