"""The multi-host harness itself: hosts on a private bridge reach each other, die, resolve names, run PostgreSQL,
and leave nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import pytest

from tests.hosts import (
    DNSMASQ,
    ETC_NETNS,
    IP,
    NETNS_DIR,
    Host,
    Network,
    netns_unavailable,
    postgres_bin,
    start_postgres,
)

pytestmark = pytest.mark.skipif(netns_unavailable() is not None, reason=str(netns_unavailable()))

PYTHON = sys.executable  # the venv's: grpcio and asyncpg are there

HEALTH_SERVER = """
import sys
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

ip, port, name = sys.argv[1], sys.argv[2], sys.argv[3]

class Named(health.HealthServicer):
    def Check(self, request, context):
        context.set_trailing_metadata((("host", name),))  # tells the client which server answered
        return super().Check(request, context)

servicer = Named()
servicer.set("", health_pb2.HealthCheckResponse.SERVING)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
server.add_insecure_port(f"{ip}:{port}")
server.start()
server.wait_for_termination()
"""

HEALTH_CLIENT = """
import collections, json, sys
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

channel = grpc.insecure_channel(sys.argv[1], options=[("grpc.lb_policy_name", "round_robin")])
stub = health_pb2_grpc.HealthStub(channel)
counts = collections.Counter()
for _ in range(200):  # bounded: round_robin spreads calls once both subchannels are connected
    response, call = stub.Check.with_call(health_pb2.HealthCheckRequest(), timeout=5, wait_for_ready=True)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    counts[dict(call.trailing_metadata())["host"]] += 1
    if len(counts) > 1 and sum(counts.values()) >= 20:
        break
print(json.dumps(counts))
"""

PG_CLIENT = """
import asyncio, json, sys
import asyncpg

async def main():
    connection = await asyncpg.connect(sys.argv[1], timeout=10)
    try:
        row = await connection.fetchrow("select host(inet_server_addr()) as server, host(inet_client_addr()) as client")
        print(json.dumps(dict(row)))
    finally:
        await connection.close()

asyncio.run(main())
"""


@pytest.fixture
def network() -> Iterator[Network]:
    with Network() as net:
        yield net


def serve_http(host: Host, directory: Path, port: int = 8000) -> subprocess.Popen[bytes]:
    """A plain HTTP server for directory on host.ip:port, once it accepts connections."""
    process = host.popen([PYTHON, "-m", "http.server", "--bind", host.ip, "--directory", directory, str(port)],
                         log=directory.parent / f"http-{host.name}.log")
    host.wait_for_port(port, process=process)
    return process


def fetch(client: Host, url: str) -> str:
    """GET url from inside client."""
    code = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode(), end='')"
    return client.run([PYTHON, "-c", code, url]).stdout


def root_links() -> set[str]:
    """The root namespace's interfaces, by name."""
    out = subprocess.run([IP, "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def processes_in(inodes: set[int]) -> list[int]:
    """Every process (any thread) whose network namespace is one of inodes."""
    found = []
    for task in Path("/proc").glob("[0-9]*/task/[0-9]*"):
        try:
            if os.stat(task / "ns" / "net").st_ino in inodes:
                found.append(int(task.name))
        except OSError:
            pass
    return found


def test_hosts_reach_each_other_by_ip(network: Network, tmp_path: Path) -> None:
    a, b = network.add_host("a"), network.add_host("b")
    assert a.ip != b.ip and {a.ip, b.ip} <= {str(ip) for ip in network.subnet.hosts()}
    for host in (a, b):
        (tmp_path / host.name).mkdir()
        (tmp_path / host.name / "who").write_text(host.name)
        serve_http(host, tmp_path / host.name)
    assert fetch(b, f"http://{a.ip}:8000/who") == "a"
    assert fetch(a, f"http://{b.ip}:8000/who") == "b"
    b.connect(a.ip, 8000).close()  # a socket opened from the test process, inside b


def test_killed_host_is_unreachable_then_runs_again(network: Network, tmp_path: Path) -> None:
    a, b = network.add_host("a"), network.add_host("b")
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "who").write_text("a")
    server = serve_http(a, tmp_path / "www")
    sleeper = a.popen(["sleep", "300"], log=tmp_path / "sleep.log")
    assert {server.pid, sleeper.pid} <= a.pids()

    a.kill()
    assert a.pids() == set()
    assert server.poll() == sleeper.poll() == -9
    with pytest.raises(ConnectionRefusedError):
        b.connect(a.ip, 8000)

    serve_http(a, tmp_path / "www")
    assert fetch(b, f"http://{a.ip}:8000/who") == "a"


@pytest.mark.skipif(not os.path.exists(DNSMASQ), reason=f"{DNSMASQ} missing: apt-get install dnsmasq-base")
def test_dns_round_robin_reaches_both_grpc_servers(network: Network, tmp_path: Path) -> None:
    t1, t2, client = network.add_host("transformer1"), network.add_host("transformer2"), network.add_host("client")
    network.add_dns({"transformer": [t1, t2]})

    addresses = client.run(["getent", "ahostsv4", "transformer.mesh"]).stdout.split()
    assert {t1.ip, t2.ip} <= set(addresses)
    assert client.run(["getent", "hosts", "transformer1.mesh"]).stdout.split() == [t1.ip, "transformer1.mesh"]
    assert client.run(["getent", "hosts", "nothing.mesh"], check=False).returncode == 2  # NXDOMAIN, not forwarded

    (tmp_path / "server.py").write_text(HEALTH_SERVER)
    (tmp_path / "client.py").write_text(HEALTH_CLIENT)
    for host in (t1, t2):
        process = host.popen([PYTHON, tmp_path / "server.py", host.ip, "50051", host.name],
                             log=tmp_path / f"{host.name}.log")
        host.wait_for_port(50051, process=process)
    # c-ares (gRPC's default resolver) reads /etc/resolv.conf, which `ip netns exec` has replaced with the
    # host's: the machine's own name server is not even routable from here, so answers prove it used the host's.
    environ = {k: v for k, v in os.environ.items() if k != "GRPC_DNS_RESOLVER"}
    for resolver in ("", "ares", "native"):  # the default, c-ares named, getaddrinfo
        env = {**environ, "GRPC_DNS_RESOLVER": resolver} if resolver else environ
        out = client.run([PYTHON, tmp_path / "client.py", "dns:///transformer.mesh:50051"], env=env).stdout
        counts = json.loads(out)
        assert set(counts) == {"transformer1", "transformer2"}, (resolver, counts)


@pytest.mark.skipif(postgres_bin() is None, reason="no PostgreSQL server: apt-get install postgresql-15")
def test_postgres_in_one_host_serves_another(network: Network, tmp_path: Path) -> None:
    db, app = network.add_host("db"), network.add_host("app")
    (tmp_path / "client.py").write_text(PG_CLIENT)
    with start_postgres(db, tmp_path) as pg:
        assert pg.url == f"postgresql://postgres@{db.ip}:5432/postgres"
        out = app.run([PYTHON, tmp_path / "client.py", pg.url]).stdout
        assert json.loads(out) == {"server": db.ip, "client": app.ip}
        assert pg.pids()
        db.kill()  # the server's host dies under it
        assert pg.pids() == set()
    assert pg.process.returncode == -9 and not pg.data_dir.exists()


@pytest.mark.parametrize("fail", [False, True])
def test_nothing_is_left_after_the_network(tmp_path: Path, fail: bool) -> None:
    links = root_links()
    with pytest.raises(ZeroDivisionError) if fail else nullcontext():
        with Network() as net:
            a, b = net.add_host("a"), net.add_host("b")
            if os.path.exists(DNSMASQ):
                net.add_dns({"pair": [a, b]})
            processes = [host.popen(["sleep", "300"], log=tmp_path / "sleep.log") for host in (a, b, net.bridge)]
            namespaces = net.namespaces
            inodes = {os.stat(NETNS_DIR / ns).st_ino for ns in namespaces}
            assert all((ETC_NETNS / ns / "resolv.conf").exists() for ns in namespaces)
            assert processes_in(inodes)
            if fail:
                1 / 0  # a test failing halfway
    listed = subprocess.run([IP, "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert net.prefix not in listed
    assert not any((ETC_NETNS / ns).exists() for ns in namespaces)
    assert root_links() == links  # no veth or bridge ever touched the root namespace
    assert processes_in(inodes) == []
    assert all(process.returncode == -9 for process in processes)
    assert not net.scratch.exists()
