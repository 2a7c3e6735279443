"""The Scheduler gRPC service: runs a request synchronously or as a job, and answers for its jobs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import cast

import grpc

from geomesh.balancer import BalancedStub, Deadlines
from geomesh.errors import RequestValidationError, UnsupportedOperationError
from geomesh.model import BBox, TimeRange
from geomesh.rpc import REQUEST_ID_KEY, RunningServer, rpc_errors, start_server
from geomesh.s3 import S3Clients
from geomesh.settings import SchedulerSettings
from geomesh.v1 import (
    catalog_pb2_grpc,
    request_pb2,
    scheduler_pb2,
    scheduler_pb2_grpc,
    transformer_pb2,
    types_pb2,
)
from scheduler.dispatcher import Dispatcher
from scheduler.health import Health
from scheduler.jobs.messages import job_message
from scheduler.jobs.states import JobStatus
from scheduler.jobs.store import Caller, JobStore, NewJob, NewLink, outage
from scheduler.maps import (
    MAP_CATALOG_LIMIT,
    PLAN_TTL_SECONDS,
    TOO_MANY,
    TtlCache,
    covering,
    drawing_order,
    footprint,
    pixel_cell,
    proj_crs,
)
from scheduler.planner import Plan, Planner, limit_message, work_item
from scheduler.reaper import Reaper
from scheduler.staging import StagedKey, Stagings, open_staging
from scheduler.transformer_pool import TransformerPool

DEFAULT_LINK_LIMIT = 2000
_ACTIONS = {
    scheduler_pb2.ControlJobRequest.CANCEL: JobStatus.CANCELED,
    scheduler_pb2.ControlJobRequest.PAUSE: JobStatus.PAUSED,
    scheduler_pb2.ControlJobRequest.RESUME: JobStatus.RUNNING,
    scheduler_pb2.ControlJobRequest.SKIP_PREVIEW: JobStatus.RUNNING,
}


class SchedulerService(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(
        self,
        planner: Planner,
        transformers: TransformerPool,
        store: JobStore,
        stagings: Stagings,
        dispatcher: Dispatcher,
        health: Health,
        settings: SchedulerSettings,
    ) -> None:
        self.planner = planner
        self.transformers = transformers
        self.store = store
        self.stagings = stagings
        self.dispatcher = dispatcher
        self.health = health
        self.settings = settings
        self._map_plans = TtlCache(PLAN_TTL_SECONDS)
        self._map_catalogs = TtlCache(PLAN_TTL_SECONDS)

    async def Execute(
        self, request: request_pb2.DataRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[scheduler_pb2.ExecuteResponse]:
        metadata = ((REQUEST_ID_KEY, request.request_id),)
        with rpc_errors():
            plan = await self.planner.plan(request, metadata)
            if plan.direct_download:
                yield scheduler_pb2.ExecuteResponse(job=await self._direct_download(plan, metadata))
                return
            hits, granules = await self.planner.search(plan.request, limit=2, metadata=metadata, area=plan.area)
            if hits == 0 or not granules:
                raise RequestValidationError("No matching granules found.")
            if not self._runs_sync(plan, hits):
                yield scheduler_pb2.ExecuteResponse(job=await self._create_job(plan, hits, metadata))
                return
        item = work_item(plan.request, granules[0], plan.match)
        async for chunk in self.transformers.transform(list(plan.match.service.addresses), item):
            if chunk.WhichOneof("item") == "header":
                yield scheduler_pb2.ExecuteResponse(header=chunk.header)
            else:
                yield scheduler_pb2.ExecuteResponse(data=chunk.data)

    def _runs_sync(self, plan: Plan, hits: int) -> bool:
        """Harmony's rule: one granule, a service that allows sync, and no forceAsync."""
        request = plan.request
        count = min(hits, request.max_results) if request.HasField("max_results") else hits
        # Outputs for the user's bucket (destinationUrl) are written there by a job, as Harmony does.
        return (
            count == 1
            and plan.match.service.maximum_sync_granules >= 1
            and not request.force_async
            and not request.destination_url
        )

    def _granule_limit(self, request: request_pb2.DataRequest) -> int:
        if request.HasField("max_results"):
            return min(request.max_results, self.settings.max_granules)
        return self.settings.max_granules

    async def _create_job(self, plan: Plan, hits: int, metadata: tuple) -> scheduler_pb2.Job:
        request = plan.request
        _require_user(request)
        if request.destination_url:  # a bucket geomesh cannot write to fails now, not granule by granule
            await self.stagings.for_destination(request.destination_url).check_writable()
        hits, granules = await self.planner.search(
            request, limit=self._granule_limit(request), metadata=metadata, area=plan.area
        )
        max_results = request.max_results if request.HasField("max_results") else None
        view = await self.store.create_job(
            NewJob(
                username=request.user,
                request_url=request.request_url,
                data_request=request.SerializeToString(),
                service_match=plan.match.SerializeToString(),
                num_input_granules=len(granules),
                ignore_errors=request.ignore_errors if request.HasField("ignore_errors") else True,
                labels=list(request.labels),
                custom_message=limit_message(hits, len(granules), max_results),
                work=[(granule.id, granule.SerializeToString()) for granule in granules],
                destination_url=request.destination_url or None,
                service=plan.match.service.name,
            )
        )
        self.dispatcher.wake()
        return job_message(view)

    async def _direct_download(self, plan: Plan, metadata: tuple) -> scheduler_pb2.Job:
        """No operation to perform: the granules' own data links answer the request at once."""
        request = plan.request
        _require_user(request)
        hits, granules = await self.planner.search(
            request, limit=self._granule_limit(request), metadata=metadata, area=plan.area
        )
        if hits == 0 or not granules:
            raise RequestValidationError("No matching granules found.")
        max_results = request.max_results if request.HasField("max_results") else None
        notice = limit_message(hits, len(granules), max_results)
        message = plan.match.direct_download_message + (f" {notice}" if notice else "")
        view = await self.store.create_job(
            NewJob(
                username=request.user,
                request_url=request.request_url,
                data_request=request.SerializeToString(),
                service_match=None,
                num_input_granules=len(granules),
                labels=list(request.labels),
                custom_message=message,
                links=[link for granule in granules for link in _granule_links(granule)],
            )
        )
        # Answered inline, as Harmony does: every link on one page.
        view = await self.store.get_job(Caller(request.user), view.job.job_id, limit=max(view.link_count, 1))
        return job_message(view)

    async def GetJob(self, request: scheduler_pb2.GetJobRequest, context: grpc.aio.ServicerContext) -> scheduler_pb2.Job:
        with rpc_errors():
            page, limit = _paging(request.page, request.limit, DEFAULT_LINK_LIMIT)
            view = await self.store.get_job(_caller(request.caller), _job_id(request.job_id), page=page, limit=limit)
            return job_message(view, self._s3_href if request.link_type.lower() == "s3" else None)

    def _s3_href(self, href: str) -> str:
        """Harmony's linktype=s3: a staged output as the s3:// URL of its object."""
        key = StagedKey.from_href(href)
        if key is None:
            return href  # the granule's own link (direct download) or already s3:// (destinationUrl)
        url = self.stagings.default.s3_url(key)
        if url is None:
            raise RequestValidationError(
                'query parameter "linktype" value "s3" needs outputs staged on object storage, and this geomesh '
                "stages them in a local folder (GEOMESH_SCHEDULER_STAGING_URL): use linktype=https"
            )
        return url

    async def ListJobs(
        self, request: scheduler_pb2.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> scheduler_pb2.ListJobsResponse:
        with rpc_errors():
            page, limit = _paging(request.page, request.limit, 10)
            views, total = await self.store.list_jobs(_caller(request.caller), page=page, limit=limit, labels=request.labels)
            return scheduler_pb2.ListJobsResponse(jobs=[job_message(view) for view in views], total=total)

    async def ControlJob(
        self, request: scheduler_pb2.ControlJobRequest, context: grpc.aio.ServicerContext
    ) -> scheduler_pb2.Job:
        with rpc_errors():
            if request.action not in _ACTIONS:
                raise RequestValidationError("action must be one of CANCEL, PAUSE, RESUME, SKIP_PREVIEW")
            caller, job_id = _caller(request.caller), _job_id(request.job_id)
            # Skipping the preview resumes a job only from the preview, never from a user's pause.
            only_from = JobStatus.PREVIEWING if request.action == scheduler_pb2.ControlJobRequest.SKIP_PREVIEW else None
            await self.store.move(caller, job_id, _ACTIONS[request.action], only_from=only_from)
            if request.action == scheduler_pb2.ControlJobRequest.CANCEL:
                self.dispatcher.stop_job(job_id)
            else:
                self.dispatcher.wake()
            return job_message(await self.store.get_job(caller, job_id, page=1, limit=DEFAULT_LINK_LIMIT))

    async def JobStatuses(
        self, request: scheduler_pb2.JobStatusesRequest, context: grpc.aio.ServicerContext
    ) -> scheduler_pb2.JobStatusesResponse:
        with rpc_errors():
            ids = [_job_id(job_id) for job_id in request.job_ids]
            found = {job.job_id: job for job in await self.store.find_jobs(_caller(request.caller), ids)}
            return scheduler_pb2.JobStatusesResponse(
                statuses=[
                    scheduler_pb2.JobStatus(job_id=job_id, status=found[job_id].status, progress=found[job_id].progress)
                    for job_id in dict.fromkeys(ids)
                    if job_id in found
                ],
                not_found=[job_id for job_id in dict.fromkeys(ids) if job_id not in found],
            )

    async def UpdateLabels(
        self, request: scheduler_pb2.UpdateLabelsRequest, context: grpc.aio.ServicerContext
    ) -> scheduler_pb2.UpdateLabelsResponse:
        with rpc_errors():
            ids = [_job_id(job_id) for job_id in request.job_ids]
            if not ids:
                raise RequestValidationError("Give at least one jobID")
            labels = await self.store.update_labels(_caller(request.caller), ids, request.labels, remove=request.remove)
            return scheduler_pb2.UpdateLabelsResponse(job_ids=ids, labels=labels)

    async def FetchResult(
        self, request: scheduler_pb2.FetchResultRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[scheduler_pb2.FetchResultResponse]:
        with rpc_errors():
            key = StagedKey.parse(_job_id(request.job_id), request.path)
            if request.offset < 0 or request.length < 0:
                raise RequestValidationError("offset and length must not be negative")
            _, link = await self.store.find_output(_caller(request.caller), key.job_id, key.href)
            staging = self.stagings.default
            header = scheduler_pb2.ResultHeader(file_name=key.file_name, media_type=link.type)
            if request.allow_redirect and self.settings.staging_redirect:
                url = await staging.presigned_url(key, self.settings.presign_seconds, link.type)
                if url is not None:
                    header.redirect_url = url
                    yield scheduler_pb2.FetchResultResponse(header=header)
                    return
            header.size_bytes = await staging.size(key)
            yield scheduler_pb2.FetchResultResponse(header=header)
            async for data in staging.read(key, request.offset, request.length or None):
                yield scheduler_pb2.FetchResultResponse(data=data)

    async def GetMap(self, request: scheduler_pb2.MapRequest, context: grpc.aio.ServicerContext) -> transformer_pb2.RenderedMap:
        metadata = ((REQUEST_ID_KEY, request.request_id),)
        with rpc_errors():
            plan = await self._map_plan(request, metadata)
            granules = await self._map_granules(self._map_search(plan, request, request.render), metadata)
        # No granule there: a blank map (background or transparent), as WMS clients expect.
        render = transformer_pb2.RenderRequest()
        render.CopyFrom(request.render)
        render.request_id = request.request_id
        render.access_token = request.access_token
        render.crs = proj_crs(render.crs)
        render.granules.extend(drawing_order(granules))
        del render.variables[:]
        render.variables.extend(plan.request.variables)
        return await self.transformers.render(list(plan.match.service.addresses), render)

    async def GetFeatureInfo(
        self, request: scheduler_pb2.FeatureInfoRequest, context: grpc.aio.ServicerContext
    ) -> transformer_pb2.Samples:
        """The granules GetMap would draw under the pixel, newest first, sampled by the layer's renderer."""
        map_request = request.map
        metadata = ((REQUEST_ID_KEY, map_request.request_id),)
        with rpc_errors():
            render = map_request.render
            if not (0 <= request.i < render.width and 0 <= request.j < render.height):
                raise RequestValidationError(f"The pixel ({request.i}, {request.j}) is not on the {render.width}x{render.height} map.")
            plan = await self._map_plan(map_request, metadata)
            # Only the granules under the pixel's own cell: a map-wide search would find far more.
            granules = await self._map_granules(self._map_search(plan, map_request, pixel_cell(render, request.i, request.j)), metadata)
        sample = transformer_pb2.SampleRequest(
            request_id=map_request.request_id, variables=plan.request.variables, crs=proj_crs(render.crs),
            min_x=render.min_x, min_y=render.min_y, max_x=render.max_x, max_y=render.max_y,
            width=render.width, height=render.height, i=request.i, j=request.j,
            feature_count=max(1, request.feature_count), access_token=map_request.access_token,
        )
        sample.granules.extend(reversed(drawing_order(granules)))
        return await self.transformers.sample(list(plan.match.service.addresses), sample)

    async def CheckHealth(
        self, request: scheduler_pb2.CheckHealthRequest, context: grpc.aio.ServicerContext
    ) -> scheduler_pb2.HealthReport:
        return await self.health.report()

    @staticmethod
    def _map_search(plan: Plan, request: scheduler_pb2.MapRequest, extent: transformer_pb2.RenderRequest) -> request_pb2.DataRequest:
        search = request_pb2.DataRequest(
            collection=plan.request.collection, granule_ids=request.granule_ids, bbox=footprint(extent).to_proto()
        )
        if request.HasField("temporal"):
            search.temporal.CopyFrom(request.temporal)
        return search

    async def _map_granules(self, search: request_pb2.DataRequest, metadata: tuple) -> list[types_pb2.Granule]:
        """The granules a map covers. A collection small enough is listed once and filtered here,
        which spares every map tile a catalog search; a large one is searched each time."""
        listed = self._map_catalogs.get(search.collection)
        if listed is None:
            hits, granules = await self.planner.search(
                request_pb2.DataRequest(collection=search.collection), limit=MAP_CATALOG_LIMIT, metadata=metadata
            )
            listed = granules if hits <= MAP_CATALOG_LIMIT else TOO_MANY
            self._map_catalogs.put(search.collection, listed)
        if listed is TOO_MANY:
            return (await self.planner.search(search, limit=self.settings.max_granules, metadata=metadata))[1]
        return covering(listed, search)  # type: ignore[arg-type]

    async def _map_plan(self, request: scheduler_pb2.MapRequest, metadata: tuple) -> Plan:
        """The collection, variables and rendering service of a layer, remembered for a while."""
        key = (request.collection, tuple(request.render.variables))
        plan = self._map_plans.get(key)
        if plan is None:
            plan = await self.planner.plan(
                request_pb2.DataRequest(collection=request.collection, variables=request.render.variables), metadata
            )
            if plan.direct_download or not plan.match.service.capabilities.maps:
                raise UnsupportedOperationError(
                    f"No service draws maps of {plan.request.collection}: use its rangeset (ogc-api-coverages) instead."
                )
            self._map_plans.put(key, plan)
        return plan  # type: ignore[return-value]


def _require_user(request: request_pb2.DataRequest) -> None:
    if not request.user:
        raise RequestValidationError("DataRequest.user is required: every job belongs to a user")


def _caller(caller: scheduler_pb2.Caller) -> Caller:
    if not caller.user:
        raise RequestValidationError("caller.user is required")
    return Caller(caller.user, caller.admin)


def _job_id(job_id: str) -> str:
    try:
        return str(uuid.UUID(job_id))
    except ValueError:
        raise RequestValidationError(f"jobID {job_id} is in invalid format.") from None


def _paging(page: int, limit: int, default_limit: int) -> tuple[int, int]:
    if page < 0 or limit < 0:
        raise RequestValidationError("page and limit must be positive")
    if limit > 10000:
        raise RequestValidationError('query parameter "limit" should be <= 10000')
    return page or 1, limit or default_limit


def _granule_links(granule: types_pb2.Granule) -> list[NewLink]:
    temporal = TimeRange.from_proto(granule.temporal) if granule.HasField("temporal") else TimeRange()
    bbox = BBox.from_proto(granule.bbox) if granule.HasField("bbox") else None
    return [
        NewLink(
            href=link.href,
            title=granule.id,
            type=link.media_type,
            bbox=(bbox.west, bbox.south, bbox.east, bbox.north) if bbox else None,
            time_start=temporal.start,
            time_end=temporal.end,
        )
        for link in granule.links
    ]


async def serve(settings: SchedulerSettings) -> RunningServer:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = await JobStore.open(settings.resolved_database_url, migrate=settings.migrate)
    s3 = S3Clients(settings.s3)
    stagings = Stagings(open_staging(settings.resolved_staging_url, s3), s3)
    credentials = settings.mesh.credentials("scheduler")
    catalog_stub = BalancedStub(
        catalog_pb2_grpc.CatalogStub, settings.catalog_address, credentials, "catalog", Deadlines(unary=settings.rpc_timeout_seconds)
    )
    catalog = cast(catalog_pb2_grpc.CatalogStub, catalog_stub)
    pool = TransformerPool(
        settings.transformer_concurrency,
        credentials,
        Deadlines(unary=settings.rpc_timeout_seconds, stream=settings.work_item_timeout_seconds),
    )
    dispatcher = Dispatcher(store, stagings, pool, catalog, settings)
    health = Health(store, stagings, catalog, pool)
    service = SchedulerService(Planner(catalog), pool, store, stagings, dispatcher, health, settings)
    reaper = Reaper(store, stagings.default, dispatcher.owner, settings.reaper_interval_seconds)
    full_name = scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name
    running = await start_server(
        "scheduler",
        lambda server: scheduler_pb2_grpc.add_SchedulerServicer_to_server(service, server),
        [full_name],
        host=settings.host,
        port=settings.port,
        metrics_port=settings.metrics_port,
        metrics_host=settings.metrics_host,
        identity="scheduler",
        mesh=settings.mesh,
        translate=outage,
    )
    dispatcher.start()
    reaper.start()
    health.start(running.health, [full_name])
    running.on_stop.extend([health.close, reaper.close, dispatcher.close, pool.close, catalog_stub.close, store.close])
    return running
