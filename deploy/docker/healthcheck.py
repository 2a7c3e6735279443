"""The image's HEALTHCHECK and Kubernetes' exec probe: is this container's geomesh service ready (or alive)?

    python healthcheck.py [SERVICE] [--live] [--host HOST] [--port PORT] [--timeout SECONDS] [--quiet]

Exit 0 if so, 1 if not. SERVICE (edge, scheduler, catalog, transformer) defaults to GEOMESH_SERVICE,
else to the service the container runs (`geomesh serve SERVICE` in /proc/1/cmdline, the image's
ENTRYPOINT and CMD). HOST and PORT default to the service's own settings (GEOMESH_<SERVICE>_HOST,
_PORT, with geomesh's default ports); a wildcard host (0.0.0.0, ::) is probed on loopback.

Readiness (the default: may this service be sent work?):
- edge: HTTP GET /readiness must answer 200.
- gRPC services: the standard health service (grpc.health.v1.Health/Check, service "") must say
  SERVING.

Liveness (`--live`: is the process answering at all, or should it be restarted?): the edge's
/readiness answers with any HTTP status; a gRPC service's Check answers with any status (SERVING, or
NOT_SERVING while it drains or waits on what it depends on). A refused connection, a failed TLS
handshake or no answer within the timeout is neither live nor ready.

Health answers any caller, but with mutual TLS (GEOMESH_MESH_TLS_DIR) the handshake itself needs a
certificate of the mesh's CA: the probe presents the service's own (the folder holds it, since the
service serves with it) and expects the server to hold that identity. Kubernetes' native gRPC probes
cannot do that handshake, hence this exec probe.

Only the standard library and grpcio/grpcio-health-checking (geomesh's own dependencies).
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

SERVICES = ("edge", "scheduler", "catalog", "transformer")
DEFAULT_PORTS = {"edge": 3000, "scheduler": 50051, "catalog": 50052, "transformer": 50061}
WILDCARDS = ("", "0.0.0.0", "::", "[::]")


def running_service(cmdline: Path = Path("/proc/1/cmdline")) -> str | None:
    """The service named after `serve` in PID 1's command line (the ENTRYPOINT, or after an init)."""
    try:
        words = cmdline.read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    for before, word in zip(words, words[1:]):
        if before == "serve" and word in SERVICES:
            return word
    return None


def probe_http(host: str, port: int, timeout: float, live: bool = False) -> tuple[bool, str]:
    """GET /readiness: ready on 200; live on any HTTP answer."""
    url = f"http://{_url_host(host)}:{port}/readiness"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status == 200 or live, f"{url}: {answer.status}"
    except urllib.error.HTTPError as error:
        return live, f"{url}: {error.code}"
    except (OSError, ValueError) as error:
        return False, f"{url}: {error}"


def probe_grpc(
    service: str, host: str, port: int, timeout: float, live: bool = False, tls_dir: Path | None = None
) -> tuple[bool, str]:
    """grpc.health.v1 Check of service "": ready when SERVING; live on any answer."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    address = f"{_url_host(host)}:{port}"
    try:
        if tls_dir is not None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=(tls_dir / "ca.pem").read_bytes(),
                private_key=(tls_dir / f"{service}.key").read_bytes(),
                certificate_chain=(tls_dir / f"{service}.pem").read_bytes(),
            )
            channel = grpc.secure_channel(address, credentials, options=[("grpc.ssl_target_name_override", service)])
        else:
            channel = grpc.insecure_channel(address)
    except OSError as error:
        return False, f"{service} at {address}: the mesh's certificates cannot be read ({error})"
    with channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            details = error.details() if isinstance(error, grpc.Call) else str(error)
            return False, f"{service} at {address}: {code.name if code else 'error'} {details or ''}".rstrip()
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    return answer.status == health_pb2.HealthCheckResponse.SERVING or live, f"{service} at {address}: {status}"


def _url_host(host: str) -> str:
    if host in WILDCARDS:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def main(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    parser = argparse.ArgumentParser(description="Exit 0 when this geomesh service is ready (or, with --live, alive), 1 otherwise.")
    parser.add_argument("service", nargs="?", choices=SERVICES)
    parser.add_argument("--live", action="store_true", help="liveness: any answer will do (default: readiness)")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    service = args.service or environ.get("GEOMESH_SERVICE") or running_service()
    if service not in SERVICES:
        print("healthcheck: which service? name it (edge, scheduler, catalog, transformer) or set GEOMESH_SERVICE", file=sys.stderr)
        return 1
    prefix = f"GEOMESH_{service.upper()}_"
    host = args.host if args.host is not None else environ.get(prefix + "HOST", "127.0.0.1")
    port = args.port if args.port is not None else int(environ.get(prefix + "PORT") or DEFAULT_PORTS[service])
    if service == "edge":
        healthy, said = probe_http(host, port, args.timeout, args.live)
    else:
        tls_dir = environ.get("GEOMESH_MESH_TLS_DIR")
        healthy, said = probe_grpc(service, host, port, args.timeout, args.live, Path(tls_dir) if tls_dir else None)
    if not args.quiet:
        kind = "live" if args.live else "ready"
        print(f"healthcheck ({kind}): {said}", file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
