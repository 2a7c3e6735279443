"""Separate "hosts" on one machine for multi-host tests: Linux network namespaces on a private bridge.

    with Network() as net:
        a, b = net.add_host("a"), net.add_host("b")
        net.add_dns({"transformer": [a, b]})        # transformer.mesh -> both IPs, as a headless Service
        server = a.popen([...], log=tmp_path / "a.log")
        a.wait_for_port(50051, process=server)
        a.kill()                                    # the host dies: every process in it, at once

Every namespace is named `gm<id>-<name>` with a fresh random id, so runs never collide. The bridge lives in a
namespace of its own (`gm<id>-bridge`, IP .1, also the DNS server and the place ports are probed from):
nothing is created or changed in the root namespace, whose routes cannot even reach the subnet. Leaving the
Network kills every process in its namespaces, deletes them (their veths go with them) and the files it wrote.

Needs root, iproute2, and for add_dns dnsmasq (Debian: dnsmasq-base); start_postgres needs PostgreSQL
server binaries (Debian: postgresql-15) and util-linux's setpriv and unshare.
"""

from __future__ import annotations

import ctypes
import functools
import ipaddress
import json
import os
import pwd
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TypeVar

IP = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else (shutil.which("ip") or "ip")
DNSMASQ = "/usr/sbin/dnsmasq"
NETNS_DIR = Path("/run/netns")  # where `ip netns add` mounts each namespace
ETC_NETNS = Path("/etc/netns")  # `ip netns exec` bind-mounts /etc/netns/<ns>/<file> over /etc/<file>
BRIDGE = "bridge"  # the name of the bridge's own namespace (and its host name)
CLONE_NEWNET = 0x40000000
POLL = 0.05  # the poll interval while waiting on a condition, never a wait for readiness itself
KILL_TIMEOUT = 10.0
HOST_NAME = re.compile(r"[a-z][a-z0-9-]{0,30}")

T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)


@functools.cache
def netns_unavailable() -> str | None:
    """Why the harness cannot run on this machine (tests skip with it), or None when it can.

    Tries for real what the harness does: a namespace, a bridge and a veth pair inside it.
    """
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not os.path.exists(IP):
        return "no `ip` command (Debian: apt-get install iproute2)"
    probe = f"gm{secrets.token_hex(3)}-probe"
    try:
        for argv in (["netns", "add", probe],
                     ["-n", probe, "link", "add", "br0", "type", "bridge"],
                     ["-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1"]):
            done = subprocess.run([IP, *argv], capture_output=True, text=True, timeout=10)
            if done.returncode != 0:
                return f"`ip {' '.join(argv)}` failed: {done.stderr.strip()}"
    finally:
        subprocess.run([IP, "netns", "del", probe], capture_output=True, timeout=10)
    return None


def _ip(*argv: str) -> None:
    """Run one `ip` command; raise with its message when it fails."""
    done = subprocess.run([IP, *argv], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(argv)}` failed: {done.stderr.strip()}")


def _used_networks() -> list[ipaddress.IPv4Network]:
    """The root namespace's routes, addresses and name servers, which the subnet must not overlap."""
    used: list[ipaddress.IPv4Network] = []
    out = subprocess.run([IP, "-4", "-j", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    for route in json.loads(out or "[]"):
        if route.get("dst") not in (None, "default"):
            used.append(ipaddress.IPv4Network(route["dst"], strict=False))
    out = subprocess.run([IP, "-4", "-j", "addr"], capture_output=True, text=True).stdout
    for link in json.loads(out or "[]"):
        for addr in link.get("addr_info", []):
            used.append(ipaddress.IPv4Network(f"{addr['local']}/{addr['prefixlen']}", strict=False))
    resolv = Path("/etc/resolv.conf")
    for line in resolv.read_text().splitlines() if resolv.exists() else []:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver" and ":" not in parts[1]:
            used.append(ipaddress.IPv4Network(parts[1]))
    return used


def _free_subnet() -> ipaddress.IPv4Network:
    """A random 10.a.b.0/24 that overlaps nothing the machine routes to, so no address is ambiguous."""
    used = _used_networks()
    for _ in range(1000):
        subnet = ipaddress.IPv4Network(f"10.{random.randint(1, 254)}.{random.randint(0, 255)}.0/24")
        if not any(subnet.overlaps(other) for other in used):
            return subnet
    raise RuntimeError("no free 10.x.y.0/24 subnet")


def namespace_pids(namespace: str) -> set[int]:
    """The processes in a namespace, from `ip netns pids` (zombies are not listed: they have left it)."""
    done = subprocess.run([IP, "netns", "pids", namespace], capture_output=True, text=True, timeout=10)
    return {int(pid) for pid in done.stdout.split()} - {os.getpid()}


def kill_pids(pids: Callable[[], set[int]], what: str, timeout: float = KILL_TIMEOUT) -> None:
    """SIGKILL every pid pids() lists, again until it lists none (a process may fork while dying)."""
    deadline = time.monotonic() + timeout
    while left := pids():
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {sorted(left)} in {what} survived SIGKILL for {timeout}s")
        time.sleep(POLL)


def in_namespace(namespace: str, fn: Callable[[], T]) -> T:
    """Run fn on a fresh thread that has joined the network namespace, and return its result.

    setns(CLONE_NEWNET) moves only the calling thread, and sockets keep the namespace they were made in, so a
    socket opened here can be used from any thread afterwards. No process per call, and errors stay Python
    exceptions. (os.setns is Python 3.12+; ctypes calls libc's.)
    """
    outcome: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            with open(NETNS_DIR / namespace) as ns:
                if _libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns into {namespace}: {os.strerror(errno)}")
            outcome.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"netns-{namespace}", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return outcome[0]


def log_tail(path: Path, lines: int = 30) -> str:
    """The end of a log, for error messages."""
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass(eq=False)
class Host:
    """One machine of the test: a network namespace with its own IP on the network's bridge."""

    name: str
    ip: str
    namespace: str
    network: Network = field(repr=False)

    def _argv(self, argv: Sequence[str | os.PathLike[str]]) -> list[str]:
        return [IP, "netns", "exec", self.namespace, *map(str, argv)]

    def popen(self, argv: Sequence[str | os.PathLike[str]], *, env: Mapping[str, str] | None = None,
              log: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start a long-running process in this host, stdout and stderr appended to log.

        `ip netns exec` execs the command, so the Popen's pid is the command's own. The network kills and
        reaps it on exit at the latest.
        """
        with log.open("ab") as out:
            process = subprocess.Popen(self._argv(argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=subprocess.STDOUT)
        self.network.processes.append(process)
        return process

    def run(self, argv: Sequence[str | os.PathLike[str]], *, env: Mapping[str, str] | None = None,
            cwd: Path | None = None, timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a short command in this host and capture its output; with check, raise with it on failure."""
        done = subprocess.run(self._argv(argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{list(map(str, argv))} on {self.name} exited {done.returncode}:\n"
                               f"{done.stdout}{done.stderr}")
        return done

    def pids(self) -> set[int]:
        """The processes running in this host."""
        return namespace_pids(self.namespace)

    def kill(self) -> None:
        """The host dies: SIGKILL every process in it at once, and return when none is left.

        The namespace and its IP stay (connections are refused, not timed out), so it can run processes again.
        """
        kill_pids(self.pids, self.name)
        for process in self.network.processes:
            process.poll()  # reap ours that died, so no zombie waits for the network's exit

    def connect(self, ip: str, port: int, timeout: float = 1.0) -> socket.socket:
        """A TCP connection from this host to ip:port (a socket of this host's namespace)."""
        return in_namespace(self.namespace, lambda: socket.create_connection((ip, port), timeout=timeout))

    def wait_for_port(self, port: int, timeout: float = 10.0,
                      process: subprocess.Popen[bytes] | None = None) -> None:
        """Poll until this host accepts TCP connections on port, probed over the network from the bridge.

        With process, fail as soon as it exits instead of waiting out the timeout.
        """
        deadline = time.monotonic() + timeout
        while True:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{process.args!r} on {self.name} exited {process.returncode} "
                                   f"before {self.ip}:{port} accepted connections")
            try:
                self.network.bridge.connect(self.ip, port).close()
                return
            except OSError as exc:
                problem = exc
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} ({self.ip}:{port}) accepted no TCP connection "
                                   f"within {timeout}s: {problem}")
            time.sleep(POLL)


class Network:
    """A private network of hosts: one bridge in its own namespace, a veth pair and an IP per host."""

    def __init__(self, domain: str = "mesh") -> None:
        self.id = secrets.token_hex(3)
        self.prefix = f"gm{self.id}"
        self.domain = domain
        self.subnet = _free_subnet()
        self._addresses = self.subnet.hosts()
        self.hosts: dict[str, Host] = {}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.services = ExitStack()  # servers' stops, run first on exit
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self.scratch.chmod(0o755)  # other users (postgres) must reach their folders in it
        self._namespaces: list[str] = []
        self._etc_dirs: list[Path] = []
        self._made_etc_netns = False
        self._dns: subprocess.Popen[bytes] | None = None
        try:
            self.bridge = self._add_namespace(BRIDGE)
            _ip("-n", self.bridge.namespace, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.bridge.namespace, "addr", "add", f"{self.bridge.ip}/{self.subnet.prefixlen}", "dev", "br0")
            _ip("-n", self.bridge.namespace, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Network:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close(raise_errors=exc is None)

    @property
    def namespaces(self) -> list[str]:
        """Every namespace of this network, the bridge's first."""
        return list(self._namespaces)

    def pids(self) -> set[int]:
        """Every process in any of this network's namespaces."""
        return {pid for namespace in self._namespaces for pid in namespace_pids(namespace)}

    def _add_namespace(self, name: str) -> Host:
        """A namespace with lo up, its IP, and /etc/netns files so its resolver asks the network's DNS."""
        if not HOST_NAME.fullmatch(name):
            raise ValueError(f"host name {name!r}: lower-case letters, digits and '-', at most 31")
        if name in self.hosts or (name == BRIDGE and self._namespaces):
            raise ValueError(f"host {name!r} exists")
        namespace = f"{self.prefix}-{name}"
        _ip("netns", "add", namespace)
        self._namespaces.append(namespace)
        _ip("-n", namespace, "link", "set", "lo", "up")
        host = Host(name, str(next(self._addresses)), namespace, self)
        self._write_etc(host)
        return host

    def _write_etc(self, host: Host) -> None:
        """resolv.conf naming the bridge's DNS, hosts naming the host itself, as a pod's are."""
        self._made_etc_netns |= not ETC_NETNS.exists()
        etc = ETC_NETNS / host.namespace
        etc.mkdir(parents=True)
        self._etc_dirs.append(etc)
        dns = str(self.subnet.network_address + 1)  # the bridge's
        (etc / "resolv.conf").write_text(f"nameserver {dns}\nsearch {self.domain}\noptions timeout:1 attempts:2\n")
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n::1 localhost\n"
                                   f"{host.ip} {host.name}.{self.domain} {host.name}\n")

    def add_host(self, name: str) -> Host:
        """A new host on the bridge: its namespace, a veth pair (eth0 inside, a bridge port outside), the next IP."""
        host = self._add_namespace(name)
        port = f"v{len(self._namespaces) - 1}"
        br = self.bridge.namespace
        _ip("-n", br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host.namespace)
        _ip("-n", br, "link", "set", port, "master", "br0", "up")
        _ip("-n", host.namespace, "addr", "add", f"{host.ip}/{self.subnet.prefixlen}", "dev", "eth0")
        _ip("-n", host.namespace, "link", "set", "eth0", "up")
        self.hosts[name] = host
        return host

    def add_dns(self, names: Mapping[str, Sequence[Host]], timeout: float = 10.0) -> str:
        """Serve DNS from the bridge: each of names to all its hosts' IPs, and <host>.<domain> to each host.

        A name with several hosts answers one query with all their A records, as a Kubernetes headless Service
        does; a name without the domain gets it appended. Call once, after adding the hosts. Returns the
        server's IP, which every host's resolv.conf already names.
        """
        if self._dns is not None:
            raise RuntimeError("add_dns was already called")
        if not os.path.exists(DNSMASQ):
            raise FileNotFoundError(f"{DNSMASQ} missing: apt-get install dnsmasq-base")
        records = [(f"{host.name}.{self.domain}", host.ip) for host in [self.bridge, *self.hosts.values()]]
        for name, hosts in names.items():
            fqdn = name if name.endswith(f".{self.domain}") else f"{name}.{self.domain}"
            records += [(fqdn, host.ip) for host in hosts]
        argv = [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--pid-file=", "--log-facility=-",
                "--no-resolv", "--no-hosts", f"--local=/{self.domain}/",  # unknown names: NXDOMAIN, never forwarded
                f"--listen-address={self.bridge.ip}", "--bind-interfaces", "--user=nobody", "--group=nogroup",
                "--log-queries", *(f"--host-record={name},{ip}" for name, ip in records)]
        log = self.scratch / "dnsmasq.log"
        self._dns = self.bridge.popen(argv, log=log)
        try:
            self.bridge.wait_for_port(53, timeout, process=self._dns)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}\n{log_tail(log)}") from exc
        return self.bridge.ip

    def close(self, raise_errors: bool = True) -> None:
        """Stop services, SIGKILL whatever runs in any namespace, reap, and delete namespaces and files.

        Best effort all the way, so a failure halfway still removes the rest; then raise the first error.
        """
        errors: list[BaseException] = []

        def attempt(fn: Callable[[], object]) -> None:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - collected, raised after the rest is cleaned
                errors.append(exc)

        attempt(self.services.close)
        # Killed together across namespaces, so no service outlives a peer it could otherwise notice dying.
        attempt(lambda: kill_pids(self.pids, self.prefix))
        for process in self.processes:
            attempt(functools.partial(process.wait, KILL_TIMEOUT))
        for namespace in reversed(self._namespaces):  # hosts first: deleting one drops its veth pair
            attempt(functools.partial(_ip, "netns", "del", namespace))
        self._namespaces.clear()
        for etc in self._etc_dirs:
            attempt(functools.partial(shutil.rmtree, etc))
        self._etc_dirs.clear()
        if self._made_etc_netns:
            try:
                ETC_NETNS.rmdir()  # only if empty: another run may be using it
            except OSError:
                pass
        attempt(lambda: shutil.rmtree(self.scratch, ignore_errors=True))
        if errors and raise_errors:
            raise errors[0]


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin folder (Debian: /usr/lib/postgresql/<version>/bin)."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/postgres")]
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0) if found else None


@dataclass(eq=False)
class PostgresServer:
    """A private PostgreSQL in one host: trust auth for the subnet, listening on the host's IP only."""

    host: Host
    port: int
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host.ip}:{self.port}/postgres"

    def pids(self) -> set[int]:
        """This server's processes: those of the postgres user in its host (backends are their own groups)."""
        uid = pwd.getpwnam("postgres").pw_uid
        mine: set[int] = set()
        for pid in self.host.pids():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    mine.add(pid)
            except FileNotFoundError:
                pass
        return mine

    def stop(self, grace: float = 10.0) -> None:
        """A fast shutdown (SIGINT), SIGKILL to whatever is left after grace; remove the data. Idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        kill_pids(self.pids, f"{self.host.name}'s postgres")
        self.process.wait(KILL_TIMEOUT)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def start_postgres(host: Host, work_dir: Path, port: int = 5432, timeout: float = 30.0) -> PostgresServer:
    """initdb and run a private PostgreSQL in host as the postgres user; return once it accepts connections.

    The log goes to work_dir; the data folder sits in the network's scratch folder, owned by postgres, because
    pytest's tmp_path is inside a 0700 root folder postgres cannot enter. Its unix socket is in the data folder,
    never /var/run/postgresql (the machine's own server's). The network stops it on exit at the latest.
    """
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise FileNotFoundError("no /usr/lib/postgresql/*/bin/postgres: apt-get install postgresql-15")
    data_dir = host.network.scratch / f"postgres-{host.name}"
    data_dir.mkdir(mode=0o700)
    user = pwd.getpwnam("postgres")
    os.chown(data_dir, user.pw_uid, user.pw_gid)
    as_postgres = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]  # execs: no extra pid
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    done = subprocess.run([*as_postgres, bin_dir / "initdb", "-D", data_dir, "-U", "postgres", "--auth=trust",
                           "--no-sync", "--encoding=UTF8", "--locale=C"], env=env, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed:\n{done.stdout}{done.stderr}")
    (data_dir / "pg_hba.conf").write_text(
        "local all all trust\n"
        "host all all 127.0.0.1/32 trust\n"
        f"host all all {host.network.subnet} trust\n"
    )
    log = work_dir / f"postgres-{host.name}.log"
    # unshare --ipc: PostgreSQL's small SysV segment then dies with its processes, even when SIGKILLed;
    # dynamic shared memory goes to files in the data folder rather than /dev/shm, for the same reason.
    process = host.popen(["unshare", "--ipc", *as_postgres, bin_dir / "postgres", "-D", data_dir,
                          "-c", f"listen_addresses={host.ip}", "-c", f"port={port}",
                          "-c", f"unix_socket_directories={data_dir}", "-c", "dynamic_shared_memory_type=mmap",
                          "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                          "-c", "shared_buffers=16MB", "-c", "max_connections=20"], env=env, log=log)
    server = PostgresServer(host, port, data_dir, log, process)
    host.network.services.callback(server.stop)
    deadline = time.monotonic() + timeout
    while True:
        # pg_isready over the network, from the bridge: the server accepts connections, not only the port.
        ready = host.network.bridge.run([bin_dir / "pg_isready", "-q", "-h", host.ip, "-p", str(port), "-t", "1"],
                                        env=env, check=False)
        if ready.returncode == 0:
            return server
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"postgres in {host.name} not ready (exit {process.returncode}) within {timeout}s:\n"
                               f"{log_tail(log)}")
        time.sleep(POLL)
