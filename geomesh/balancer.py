"""gRPC clients for addresses that scale: a DNS name, a comma-separated list, or both, with failover.

An address setting (`GEOMESH_EDGE_SCHEDULER_ADDRESS`, a registry entry's transformer addresses, ...)
holds one or more entries: `host:port`, `dns:///name:port` (every address the name resolves to: a
Kubernetes headless Service), or any other gRPC target. Each entry gets one channel that balances
round-robin over the addresses it resolves to (gRPC's default, pick_first, would send every call to
the first). Calls go to the entries in turn; a call that finds its entry unreachable before any
answer came back goes on to the next, so a client keeps working while any entry is up.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext, suppress
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from geomesh import logs, tracing
from geomesh.errors import ERROR_KIND_KEY, ServiceUnavailableError
from geomesh.identity import Credentials
from geomesh.metrics import GRPC_CLIENT_CALLS, GRPC_CLIENT_SECONDS

# Large enough for one shape upload or a generous output chunk; chunks themselves stay small.
MESSAGE_LIMIT = 64 * 1024 * 1024
_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        # Within one entry, a call that could not reach a backend is tried on the next (one of a
        # DNS name's pods going away); the waits stay short because other entries may be up.
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MESSAGE_LIMIT),
    ("grpc.max_receive_message_length", MESSAGE_LIMIT),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.service_config", _SERVICE_CONFIG),
    # A DNS name is resolved again this often at most: new replicas join without a restart.
    ("grpc.dns_min_time_between_resolutions_ms", 5_000),
    # A restarted service is found again within about two seconds (gRPC waits up to 120 s by default).
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]
_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")

Stub = TypeVar("Stub")


def targets(addresses: str | Sequence[str]) -> list[str]:
    """The gRPC targets of an address setting: comma-separated entries, `host:port` read as DNS."""
    entries = addresses.split(",") if isinstance(addresses, str) else [e for a in addresses for e in a.split(",")]
    found = [entry.strip() for entry in entries if entry.strip()]
    if not found:
        raise ValueError(f"no gRPC address in {addresses!r}: give host:port, dns:///name:port, or a comma-separated list")
    return [entry if entry.startswith(_SCHEMES) else f"dns:///{entry}" for entry in found]


@dataclass(frozen=True)
class Deadlines:
    """How long a call may take unless it says otherwise: unary calls, and streams (a whole output)."""

    unary: float = 30.0
    stream: float = 900.0


def open_channel(target: str, credentials: Credentials, peer: str) -> grpc.aio.Channel:
    """One channel to the `peer` service at one target, balancing round-robin over the addresses the
    target resolves to, proving this process's identity as the mesh settings say."""
    options = CHANNEL_OPTIONS + credentials.channel_options(peer)
    interceptors = credentials.interceptors() or None
    channel_credentials = credentials.channel_credentials()
    if channel_credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, channel_credentials, options=options, interceptors=interceptors)


def unreachable(error: grpc.RpcError) -> bool:
    """The peer could not be reached (or went away): not an answer it gave, which carries our error kind."""
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    return ERROR_KIND_KEY not in dict(trailers or ())


@dataclass
class Entry(Generic[Stub]):
    target: str
    peer: str  # the service it reaches (scheduler, catalog, transformer)
    channel: grpc.aio.Channel
    stub: Stub
    # Calls in flight on this entry; thousands on one channel make some fail with CANCELLED.
    slots: asyncio.Semaphore | None

    def attempt(self, method: str, kwargs: dict[str, Any]) -> tracing.Span:
        """A call's span, its context (and the request id being served) put in the call's metadata."""
        span = tracing.client_span(
            f"{self.peer}/{method}", **{"rpc.system": "grpc", "rpc.method": method, "server.address": self.target}
        )
        # A retry on another entry replaces the previous attempt's trace context.
        metadata = tuple((key, value) for key, value in kwargs.get("metadata") or () if key not in tracing.HEADERS)
        if logs.request_id.get() and all(key != logs.REQUEST_ID_KEY for key, _ in metadata):
            metadata += ((logs.REQUEST_ID_KEY, logs.request_id.get()),)
        kwargs["metadata"] = tracing.outgoing(span, metadata)
        return span

    def observe(self, method: str, code: grpc.StatusCode, started: float, span: tracing.Span) -> None:
        GRPC_CLIENT_CALLS.labels(self.peer, self.target, method, code.name).inc()
        GRPC_CLIENT_SECONDS.labels(self.peer, method).observe(time.perf_counter() - started)
        tracing.rpc_code(span, code)
        span.end()

    def ready_or_idle(self) -> bool:
        return self.channel.get_state(try_to_connect=False) != grpc.ChannelConnectivity.TRANSIENT_FAILURE


def entry(
    make_stub: Callable[[grpc.aio.Channel], Stub],
    target: str,
    credentials: Credentials,
    peer: str,
    concurrency: int | None = None,
) -> Entry[Stub]:
    channel = open_channel(target, credentials, peer)
    return Entry(target, peer, channel, make_stub(channel), asyncio.Semaphore(concurrency) if concurrency else None)


class Balanced(Generic[Stub]):
    """One stub's methods over several entries, in turn, with failover; every call with a deadline."""

    def __init__(self, entries: Sequence[Entry[Stub]], deadlines: Deadlines = Deadlines()) -> None:
        self.entries = list(entries)
        self.targets = [e.target for e in self.entries]
        self.deadlines = deadlines
        self._turn = itertools.count()

    @classmethod
    def of(
        cls,
        make_stub: Callable[[grpc.aio.Channel], Stub],
        addresses: str | Sequence[str],
        credentials: Credentials,
        peer: str,
        deadlines: Deadlines = Deadlines(),
    ) -> Balanced[Stub]:
        return cls([entry(make_stub, target, credentials, peer) for target in targets(addresses)], deadlines)

    def order(self) -> list[Entry[Stub]]:
        """Every entry, starting from the next in turn; those known to be failing last, still tried."""
        start = next(self._turn) % len(self.entries)
        turn = self.entries[start:] + self.entries[:start]
        return [e for e in turn if e.ready_or_idle()] + [e for e in turn if not e.ready_or_idle()]

    async def unary(self, method: str, request: Any, **kwargs: Any) -> Any:
        """`stub.method(request)` on the first entry that can be reached."""
        kwargs.setdefault("timeout", self.deadlines.unary)
        last: grpc.RpcError | None = None
        for entry in self.order():
            async with _slot(entry):
                started, span = time.perf_counter(), entry.attempt(method, kwargs)
                try:
                    answer = await getattr(entry.stub, method)(request, **kwargs)
                except grpc.RpcError as error:
                    entry.observe(method, error.code(), started, span)
                    if not unreachable(error):
                        raise
                    last = error
                else:
                    entry.observe(method, grpc.StatusCode.OK, started, span)
                    return answer
        raise self._unreachable(last)

    async def stream(self, method: str, request: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        """The messages of `stub.method(request)`; another entry is tried only if nothing was received yet."""
        kwargs.setdefault("timeout", self.deadlines.stream)
        last: grpc.RpcError | None = None
        for entry in self.order():
            async with _slot(entry):
                span = entry.attempt(method, kwargs)
                call = getattr(entry.stub, method)(request, **kwargs)
                received, started, code = False, time.perf_counter(), grpc.StatusCode.CANCELLED
                try:
                    async for message in call:
                        received = True
                        yield message
                    code = grpc.StatusCode.OK
                    return
                except grpc.RpcError as error:
                    code = error.code()
                    if received or not unreachable(error):
                        raise
                    last = error
                finally:
                    entry.observe(method, code, started, span)
                    call.cancel()
        raise self._unreachable(last)

    async def health(self, timeout: float) -> tuple[bool, str]:
        """Whether some entry says SERVING (grpc.health.v1, as probes ask), and what each said."""

        async def check(entry: Entry[Stub]) -> tuple[bool, str]:
            try:
                answer = await health_pb2_grpc.HealthStub(entry.channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
            except grpc.RpcError as error:
                return False, f"{entry.target.removeprefix('dns:///')}: {error.code().name.lower()} ({error.details()})"
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            return answer.status == health_pb2.HealthCheckResponse.SERVING, f"{entry.target.removeprefix('dns:///')}: {status.lower()}"

        said = await asyncio.gather(*(check(entry) for entry in self.entries))
        return any(up for up, _ in said), "; ".join(message for _, message in said)

    def _unreachable(self, last: grpc.RpcError | None) -> Exception:
        """The last entry's error (callers map it as any gRPC error); None only if there were no entries."""
        return last or ServiceUnavailableError(f"none of {', '.join(self.targets)} could be reached")

    async def close(self) -> None:
        await asyncio.gather(*(entry.channel.close() for entry in self.entries))


def _slot(entry: Entry[Any]) -> AbstractAsyncContextManager[Any]:
    return entry.slots if entry.slots is not None else nullcontext()


class _StreamCall:
    """What a streaming stub method returns: iterate it (once), or cancel it."""

    def __init__(self, messages: AsyncGenerator[Any, None]) -> None:
        self._messages = messages

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._messages

    def cancel(self) -> bool:
        """Closing the generator cancels the call under it (its finally block)."""
        asyncio.ensure_future(_close(self._messages))
        return True


async def _close(messages: AsyncGenerator[Any, None]) -> None:
    with suppress(RuntimeError):  # still being iterated elsewhere: that iteration's end closes it
        await messages.aclose()


class BalancedStub:
    """A drop-in for a generated stub (`SchedulerStub(channel)`) whose calls go through Balanced.

    Unary methods are awaited as usual; streaming ones are iterated and may be cancelled.
    """

    def __init__(
        self,
        make_stub: Callable[[grpc.aio.Channel], Any],
        addresses: str | Sequence[str],
        credentials: Credentials,
        peer: str,
        deadlines: Deadlines = Deadlines(),
    ) -> None:
        self.balanced: Balanced[Any] = Balanced.of(make_stub, addresses, credentials, peer, deadlines)
        self._kinds: dict[str, bool] = {}

    def __getattr__(self, method: str) -> Callable[..., Any]:
        streaming = self._kinds.get(method)
        if streaming is None:
            callable_ = getattr(self.balanced.entries[0].stub, method)
            streaming = self._kinds[method] = isinstance(callable_, grpc.aio.UnaryStreamMultiCallable)
        if streaming:
            return lambda request, **kwargs: _StreamCall(self.balanced.stream(method, request, **kwargs))
        return lambda request, **kwargs: self.balanced.unary(method, request, **kwargs)

    async def close(self) -> None:
        await self.balanced.close()
