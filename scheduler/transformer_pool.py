"""Calls to transformer replicas: round-robin, a cap on calls in flight per address, failover.

A service's addresses (from the registry) may each be a DNS name of several replicas (a headless
Service); geomesh.balancer balances within and across them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

import grpc

from geomesh.balancer import Balanced, Deadlines, Entry, entry, targets, unreachable
from geomesh.errors import ServiceUnavailableError, from_rpc_error
from geomesh.identity import Credentials
from geomesh.rpc import REQUEST_ID_KEY
from geomesh.v1 import transformer_pb2, transformer_pb2_grpc

log = logging.getLogger(__name__)


class TransformerPool:
    def __init__(self, concurrency: int, credentials: Credentials, deadlines: Deadlines = Deadlines()) -> None:
        self.concurrency = concurrency
        self.credentials = credentials
        self.deadlines = deadlines
        # One channel (and cap) per address, shared by every service that lists it.
        self._entries: dict[str, Entry[transformer_pb2_grpc.TransformerStub]] = {}
        self._balanced: dict[tuple[str, ...], Balanced[transformer_pb2_grpc.TransformerStub]] = {}

    def _over(self, addresses: list[str]) -> Balanced[transformer_pb2_grpc.TransformerStub]:
        key = tuple(addresses)
        if key not in self._balanced:
            for target in targets(addresses):
                if target not in self._entries:
                    self._entries[target] = entry(
                        transformer_pb2_grpc.TransformerStub, target, self.credentials, "transformer", self.concurrency
                    )
            self._balanced[key] = Balanced([self._entries[target] for target in targets(addresses)], self.deadlines)
        return self._balanced[key]

    async def render(self, addresses: list[str], request: transformer_pb2.RenderRequest) -> transformer_pb2.RenderedMap:
        """A rendered map; an unreachable replica is skipped."""
        return await self._unary(addresses, "Render", request)

    async def sample(self, addresses: list[str], request: transformer_pb2.SampleRequest) -> transformer_pb2.Samples:
        """The values under a map pixel; an unreachable replica is skipped."""
        return await self._unary(addresses, "Sample", request)

    async def _unary(self, addresses: list[str], method: str, request: Any) -> Any:
        try:
            return await self._over(addresses).unary(method, request, metadata=((REQUEST_ID_KEY, request.request_id),))
        except grpc.RpcError as error:
            raise _mapped(addresses, error) from None

    async def transform(self, addresses: list[str], item: transformer_pb2.WorkItem) -> AsyncGenerator[transformer_pb2.OutputChunk, None]:
        """Stream one work item's output; an unreachable replica is skipped if nothing was received yet."""
        chunks = self._over(addresses).stream("Transform", item, metadata=((REQUEST_ID_KEY, item.request_id),))
        try:
            async for chunk in chunks:
                yield chunk
        except grpc.RpcError as error:
            raise _mapped(addresses, error) from None
        finally:
            await chunks.aclose()

    async def health(self, addresses: list[str], timeout: float) -> tuple[bool, str]:
        """Whether some replica at these addresses is serving, and what each address said."""
        return await self._over(addresses).health(timeout)

    async def close(self) -> None:
        await asyncio.gather(*(e.channel.close() for e in self._entries.values()))
        self._entries.clear()
        self._balanced.clear()


def _mapped(addresses: list[str], error: grpc.RpcError) -> Exception:
    if unreachable(error):
        log.warning("no transformer replica of %s could be reached: %s", ", ".join(addresses), error.details())
        return TransformersUnreachable("No transformer of this service can be reached right now; try again shortly.")
    return from_rpc_error(error)


class TransformersUnreachable(ServiceUnavailableError):
    """Every replica of a service is down: work waits for one, without spending its attempts."""
