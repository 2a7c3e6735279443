"""Channels to transformer replicas: round-robin, a cap on calls in flight per replica, failover."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import grpc

from geomesh.errors import ServiceUnavailableError, from_rpc_error
from geomesh.rpc import CHANNEL_OPTIONS, REQUEST_ID_KEY
from geomesh.v1 import transformer_pb2, transformer_pb2_grpc


class _Replica:
    def __init__(self, address: str, concurrency: int) -> None:
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.stub = transformer_pb2_grpc.TransformerStub(self.channel)
        # Thousands of calls in flight on one channel make some fail with CANCELLED: queue here instead.
        self.slots = asyncio.Semaphore(concurrency)


class TransformerPool:
    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._replicas: dict[str, _Replica] = {}
        self._turns: dict[tuple[str, ...], itertools.cycle[int]] = {}

    def _replica(self, address: str) -> _Replica:
        if address not in self._replicas:
            self._replicas[address] = _Replica(address, self.concurrency)
        return self._replicas[address]

    def _order(self, addresses: list[str]) -> list[str]:
        """Addresses starting from the next replica in turn, so load spreads and failover has somewhere to go."""
        key = tuple(addresses)
        start = next(self._turns.setdefault(key, itertools.cycle(range(len(addresses)))))
        return addresses[start:] + addresses[:start]

    async def render(self, addresses: list[str], request: transformer_pb2.RenderRequest) -> transformer_pb2.RenderedMap:
        """A rendered map; an unreachable replica is skipped."""
        return await self._unary(addresses, "Render", request)

    async def sample(self, addresses: list[str], request: transformer_pb2.SampleRequest) -> transformer_pb2.Samples:
        """The values under a map pixel; an unreachable replica is skipped."""
        return await self._unary(addresses, "Sample", request)

    async def _unary(self, addresses: list[str], method: str, request: Any) -> Any:
        """One unary call on the next replica in turn, failing over while replicas are unreachable."""
        last_error: Exception | None = None
        for address in self._order(addresses):
            replica = self._replica(address)
            async with replica.slots:
                try:
                    return await getattr(replica.stub, method)(request, metadata=((REQUEST_ID_KEY, request.request_id),))
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.UNAVAILABLE:
                        raise from_rpc_error(error) from None
                    last_error = from_rpc_error(error)
        raise _unreachable(addresses, last_error)

    async def transform(self, addresses: list[str], item: transformer_pb2.WorkItem) -> AsyncIterator[transformer_pb2.OutputChunk]:
        """Stream one work item's output; an unreachable replica is skipped if nothing was received yet."""
        last_error: Exception | None = None
        for address in self._order(addresses):
            replica = self._replica(address)
            received = False
            async with replica.slots:
                call = replica.stub.Transform(item, metadata=((REQUEST_ID_KEY, item.request_id),))
                try:
                    async for chunk in call:
                        received = True
                        yield chunk
                    return
                except grpc.RpcError as error:
                    if error.code() == grpc.StatusCode.UNAVAILABLE and not received:
                        last_error = from_rpc_error(error)
                        continue
                    raise from_rpc_error(error) from None
                finally:
                    call.cancel()
        raise _unreachable(addresses, last_error)

    async def close(self) -> None:
        await asyncio.gather(*(r.channel.close() for r in self._replicas.values()))
        self._replicas.clear()


def _unreachable(addresses: list[str], last_error: Exception | None) -> ServiceUnavailableError:
    return ServiceUnavailableError(
        f"no transformer replica could be reached ({', '.join(addresses)}): {last_error}. Try again shortly."
    )
