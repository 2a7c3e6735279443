"""The Scheduler gRPC service: catalog search -> service match -> transformer -> relayed output."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from geomesh.errors import RequestValidationError, UnsupportedOperationError
from geomesh.rpc import REQUEST_ID_KEY, RunningServer, rpc_errors, start_server
from geomesh.settings import SchedulerSettings
from geomesh.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
    request_pb2,
    scheduler_pb2,
    scheduler_pb2_grpc,
    transformer_pb2,
    types_pb2,
)
from scheduler.transformer_pool import TransformerPool


class SchedulerService(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(self, catalog: catalog_pb2_grpc.CatalogStub, transformers: TransformerPool) -> None:
        self.catalog = catalog
        self.transformers = transformers

    async def Execute(
        self, request: request_pb2.DataRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[scheduler_pb2.ExecuteResponse]:
        metadata = ((REQUEST_ID_KEY, request.request_id),)
        with rpc_errors():
            collection = await self.catalog.GetCollection(
                catalog_pb2.GetCollectionRequest(collection=request.collection), metadata=metadata
            )
            variables = await self._resolve_variables(collection.id, list(request.variables), metadata)
            resolved = request_pb2.DataRequest()
            resolved.CopyFrom(request)
            resolved.collection = collection.id
            del resolved.variables[:]
            resolved.variables.extend(variables)
            match = await self.catalog.MatchService(resolved, metadata=metadata)
            if match.WhichOneof("result") == "direct_download_message":
                raise UnsupportedOperationError(
                    f"no service transforms {collection.id}, and listing its granules' own links needs "
                    "asynchronous jobs, which this geomesh version does not run yet"
                )
            hits, granules = await self._search(resolved, limit=2, metadata=metadata)
        granule = self._single_granule(resolved, match.service, hits, granules)
        item = transformer_pb2.WorkItem(
            request_id=request.request_id,
            granule=granule,
            variables=variables,
            bbox=resolved.bbox if resolved.HasField("bbox") else None,
            temporal=resolved.temporal if resolved.HasField("temporal") else None,
            dimensions=resolved.dimensions,
            shape=resolved.shape if resolved.HasField("shape") else None,
            output=resolved.output,
        )
        item.output.format = match.output_format
        async for chunk in self.transformers.transform(list(match.service.addresses), item):
            if chunk.WhichOneof("item") == "header":
                yield scheduler_pb2.ExecuteResponse(header=chunk.header)
            else:
                yield scheduler_pb2.ExecuteResponse(data=chunk.data)

    async def _resolve_variables(self, collection_id: str, requested: list[str], metadata: tuple) -> list[str]:
        """Requested names or concept ids to variable names; every unknown one is reported at once."""
        if not requested:
            return []
        response = await self.catalog.ListVariables(
            catalog_pb2.ListVariablesRequest(collection_id=collection_id), metadata=metadata
        )
        by_key = {key: v.name for v in response.variables for key in (v.name, v.id)}
        missing = [name for name in requested if name not in by_key]
        if missing:
            raise RequestValidationError(f"Coverages were not found for the provided variables: {', '.join(missing)}")
        return list(dict.fromkeys(by_key[name] for name in requested))

    async def _search(
        self, request: request_pb2.DataRequest, limit: int, metadata: tuple
    ) -> tuple[int, list[types_pb2.Granule]]:
        search = catalog_pb2.SearchGranulesRequest(
            collection_id=request.collection,
            granule_ids=request.granule_ids,
            granule_names=request.granule_names,
            limit=limit,
        )
        if request.HasField("bbox"):
            search.bbox.CopyFrom(request.bbox)
        if request.HasField("temporal"):
            search.temporal.CopyFrom(request.temporal)
        hits, granules = 0, []
        async for response in self.catalog.SearchGranules(search, metadata=metadata):
            if response.WhichOneof("item") == "hits":
                hits = response.hits
            else:
                granules.append(response.granule)
        return hits, granules

    @staticmethod
    def _single_granule(
        request: request_pb2.DataRequest, service: catalog_pb2.Service, hits: int, granules: list[types_pb2.Granule]
    ) -> types_pb2.Granule:
        if hits == 0 or not granules:
            raise RequestValidationError("No matching granules found.")
        count = min(hits, request.max_results) if request.HasField("max_results") else hits
        if count == 1 and service.maximum_sync_granules >= 1 and not request.force_async:
            return granules[0]
        reason = (
            "forceAsync was requested"
            if request.force_async
            else f"the request matches {count} granules"
            if count > 1
            else f"{service.name} always runs asynchronously"
        )
        raise UnsupportedOperationError(
            f"{reason}, and asynchronous jobs are not available in this geomesh version yet. "
            "Select one granule (granuleId, granuleName, maxResults=1, or a narrower subset) for a synchronous result."
        )


async def serve(settings: SchedulerSettings) -> RunningServer:
    channel = grpc.aio.insecure_channel(settings.catalog_address)
    pool = TransformerPool(settings.transformer_concurrency)
    service = SchedulerService(catalog_pb2_grpc.CatalogStub(channel), pool)
    running = await start_server(
        "scheduler",
        lambda server: scheduler_pb2_grpc.add_SchedulerServicer_to_server(service, server),
        [scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name],
        host=settings.host,
        port=settings.port,
        metrics_port=settings.metrics_port,
    )
    running.on_stop.extend([pool.close, channel.close])
    return running
