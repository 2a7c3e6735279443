"""The lifecycle every geomesh gRPC server shares: error mapping, metrics, health, reflection, shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from geomesh import balancer, logs, tracing
from geomesh.balancer import MESSAGE_LIMIT
from geomesh.errors import GeomeshError, from_rpc_error, grpc_trailers
from geomesh.identity import Credentials, MeshSettings
from geomesh.logs import REQUEST_ID_KEY
from geomesh.metrics import RPC_HANDLED, RPC_SECONDS

log = logging.getLogger(__name__)


SERVER_OPTIONS = [
    ("grpc.max_send_message_length", MESSAGE_LIMIT),
    ("grpc.max_receive_message_length", MESSAGE_LIMIT),
]


class _Call:
    """One observed call: binds the request id and user (for logs), continues the caller's trace,
    records metrics, maps errors to a gRPC status.

    A GeomeshError becomes its own status with our trailers (so the client rebuilds the same
    error); anything else is logged and becomes INTERNAL without leaking internals.
    """

    def __init__(
        self, service: str, method: str, request: Any, context: grpc.aio.ServicerContext, gate: Gate, translate: Translate
    ) -> None:
        self.service, self.method, self.context, self.gate, self.translate = service, method, context, gate, translate
        self.started = time.perf_counter()
        metadata = {key: value for key, value in self.context.invocation_metadata() or () if isinstance(value, str)}
        logs.request_id.set(metadata.get(REQUEST_ID_KEY))
        logs.user.set(getattr(request, "user", None) or getattr(getattr(request, "caller", None), "user", None) or None)
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
        self.span = tracing.server_span(
            f"{service}/{method}", metadata, **attributes, **{"geomesh.request_id": logs.request_id.get() or ""}
        )
        self.current = tracing.current(self.span)

    async def __aenter__(self) -> None:
        refusal = self.gate.refusal(self.context)
        if refusal is not None:  # aborting raises here: __aexit__ will not run
            code, message = refusal
            RPC_HANDLED.labels(self.service, self.method, code.name).inc()
            tracing.rpc_code(self.span, code)
            self.span.end()
            await self.context.abort(code, message)
        self.current.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, error: BaseException | None, tb: Any) -> bool:
        code = grpc.StatusCode.OK
        try:
            if error is None:
                return False
            if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
                code = grpc.StatusCode.CANCELLED
                return False
            if type(error).__name__ == "AbortError":  # the servicer called context.abort() itself
                code = self.context.code() or grpc.StatusCode.UNKNOWN
                return False
            if not isinstance(error, GeomeshError):
                error = self.translate(error) or error
            if isinstance(error, GeomeshError):
                code = error.grpc_status
                await self.context.abort(code, error.message, trailing_metadata=grpc_trailers(error))
            log.error("unexpected error in %s", self.method, exc_info=error)
            code = grpc.StatusCode.INTERNAL
            await self.context.abort(code, f"internal error in {self.method} (request {logs.request_id.get() or '-'}): see the service's log")
            return False
        finally:
            RPC_HANDLED.labels(self.service, self.method, code.name).inc()
            RPC_SECONDS.labels(self.service, self.method).observe(time.perf_counter() - self.started)
            tracing.rpc_code(self.span, code)
            self.current.__exit__(None, None, None)  # ends the span


@dataclass(frozen=True)
class Gate:
    """Who may call a server's methods: its callers' identities, proven by the mesh's credentials."""

    credentials: Credentials
    callers: frozenset[str]

    def refusal(self, context: grpc.aio.ServicerContext) -> tuple[grpc.StatusCode, str] | None:
        if not self.credentials.checks:
            return None
        caller = self.credentials.caller_of(context)
        if caller is None:
            return grpc.StatusCode.UNAUTHENTICATED, (
                f"this {self.credentials.identity} answers only calls that prove a mesh identity "
                "(mutual TLS or the mesh secret: see GEOMESH_MESH_*)"
            )
        if caller not in self.callers:
            return grpc.StatusCode.PERMISSION_DENIED, (
                f"{caller} may not call the {self.credentials.identity}; its callers are {', '.join(sorted(self.callers))}"
            )
        return None


# A server's own failures that are a GeomeshError to its callers (e.g. its database restarting: 503).
Translate = Callable[[BaseException], GeomeshError | None]


def _untranslated(error: BaseException) -> GeomeshError | None:
    return None


class _ServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, service: str, gate: Gate, translate: Translate) -> None:
        self.service = service
        self.gate = gate
        self.translate = translate
        # Wrapped handlers by method: built once, not on every call (maps are answered in milliseconds).
        self._wrapped: dict[str, Any] = {}

    async def intercept_service(self, continuation: Callable[..., Any], details: grpc.HandlerCallDetails) -> Any:
        wrapped = self._wrapped.get(details.method)
        if wrapped is None:
            handler = await continuation(details)
            if handler is None or not details.method.startswith("/geomesh."):
                return handler
            wrapped = self._wrapped[details.method] = self._wrap(handler, details.method.rsplit("/", 1)[-1])
        return wrapped

    def _wrap(self, handler: Any, method: str) -> Any:
        if handler.unary_unary:
            inner_unary = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                async with _Call(self.service, method, request, context, self.gate, self.translate):
                    return await inner_unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                async with _Call(self.service, method, request, context, self.gate, self.translate):
                    async for message in inner_stream(request, context):
                        yield message

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer
            )
        return handler


@dataclass
class RunningServer:
    name: str
    server: grpc.aio.Server
    port: int
    metrics_port: int | None
    health: health.aio.HealthServicer
    # Run after the server stops, e.g. to close clients, pools and executors.
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self, grace: float = 5.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        for cleanup in self.on_stop:
            await cleanup()


Registrar = Callable[[grpc.aio.Server], None]


async def start_server(
    name: str,
    register: Registrar,
    service_names: list[str],
    *,
    identity: str,
    mesh: MeshSettings | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    translate: Translate = _untranslated,
) -> RunningServer:
    """Start a gRPC server with health (SERVING once started) and /metrics, answering only the
    identities that may call `identity` (geomesh.identity.CALLERS), as the mesh settings prove them.

    `register` adds the servicers; `service_names` are their full names for health and reflection
    (served only when GEOMESH_MESH_REFLECTION is on). Port 0 picks a free port (tests);
    metrics_port None serves no /metrics (tests in one process).
    """
    mesh = mesh or MeshSettings()
    credentials = mesh.credentials(identity)
    gate = Gate(credentials, mesh.callers_of(identity))
    server = grpc.aio.server(interceptors=[_ServerInterceptor(name, gate, translate)], options=SERVER_OPTIONS)
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if mesh.reflection:
        reflection.enable_server_reflection([*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    address = f"{host}:{port}"
    server_credentials = credentials.server_credentials()
    if server_credentials is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, server_credentials)
    if bound == 0:
        raise OSError(f"{name}: cannot listen on {host}:{port} (address in use?)")
    await server.start()
    for service in ("", *service_names):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    exposed = None
    if metrics_port is not None:
        httpd, _ = start_http_server(metrics_port, addr=metrics_host)
        exposed = httpd.server_port
    log.info("%s listening on %s:%d (metrics: %s)", name, host, bound, exposed)
    return RunningServer(name, server, bound, exposed, health_servicer)


async def run_until_signalled(running: RunningServer, grace: float = 5.0) -> None:
    """Serve until SIGTERM or SIGINT, then drain in-flight calls for `grace` seconds."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("%s stopping", running.name)
    await running.stop(grace)


@contextmanager
def rpc_errors() -> Iterator[None]:
    """Client side: turn a failed call into the GeomeshError the peer raised."""
    try:
        yield
    except grpc.RpcError as error:
        raise from_rpc_error(error) from None


@asynccontextmanager
async def open_channel(
    address: str, peer: str, *, identity: str | None = None, mesh: MeshSettings | None = None
) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to the `peer` service at one address, as `identity` (default: peer's first caller),
    for tests and tools; services use geomesh.balancer for their settings' addresses."""
    mesh = mesh or MeshSettings()
    credentials = mesh.credentials(identity or min(mesh.callers_of(peer)))
    channel = balancer.open_channel(balancer.targets(address)[0], credentials, peer)
    try:
        yield channel
    finally:
        await channel.close()
