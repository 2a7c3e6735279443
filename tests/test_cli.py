"""`geomesh up`: every service as its own process, answering the seed's request, stopped cleanly by SIGTERM;
`geomesh users`: the edge's users file."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import queue
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from rasterio.io import MemoryFile

import transformers
from edge.auth import Authenticator, Caller, UsersSource
from geomesh import users
from geomesh.cli import main
from geomesh.errors import UnauthorizedError
from tests.loopback import up_ports


def test_our_transformers_package_is_the_one_imported() -> None:
    # `transformers` is also the ML library's import name: make sure ours is installed, not theirs.
    assert Path(transformers.__file__).parent == Path(__file__).parents[1] / "transformers"


def test_up_serves_the_seed_request_and_stops_on_sigterm(demo_dir: Path) -> None:
    ports = up_ports()
    edge, metrics = ports["--port"], ports["--metrics-port"]
    command = [sys.executable, "-m", "geomesh.cli", "up", "--data-dir", str(demo_dir)]
    command += [str(part) for option, port in ports.items() for part in (option, port)]
    # As a user starts it: no mesh settings of ours, so `up` makes its certificates (mutual TLS).
    environment = {key: value for key, value in os.environ.items() if not key.startswith("GEOMESH_")}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)
    try:
        deadline = time.monotonic() + 60
        output = []
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            output.append(line)
            if "geomesh is up" in line or process.poll() is not None:
                break
        assert "geomesh is up" in "".join(output), "".join(output)
        url = (
            f"http://127.0.0.1:{edge}/C1233800302-EEDTEST/ogc-api-coverages/1.0.0/collections/blue_var/coverage/"
            "rangeset?granuleid=G1233800343-EEDTEST"
        )
        with urllib.request.urlopen(url, timeout=30) as response:
            body = response.read()
        assert {path.name for path in (demo_dir / "certs").iterdir()} >= {"ca.pem", "scheduler.pem", "edge.key"}
        with MemoryFile(body).open() as dataset:
            assert dataset.descriptions == ("blue_var",)
        # The catalog's metrics port comes first, then the gdal transformer's.
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics + 1}/metrics", timeout=10) as response:
            assert b'geomesh_grpc_server_handled_total{code="OK",method="Transform"' in response.read()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 0
    with socket.socket() as probe:  # the children are gone too: nothing listens on the edge's port
        assert probe.connect_ex(("127.0.0.1", edge)) != 0


def test_up_restarts_a_service_killed_with_sigkill_and_stops_on_ctrl_c(demo_dir: Path) -> None:
    """kill -9 of the scheduler used to stop all six processes; now `up` starts it again (and says so)."""
    ports = up_ports()
    command = [sys.executable, "-m", "geomesh.cli", "up", "--data-dir", str(demo_dir)]
    command += [str(part) for option, port in ports.items() for part in (option, port)]
    # A session of its own, so that Ctrl-C can be sent as a terminal does: to the whole process group.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output = _Output(process)
    try:
        output.wait_for("geomesh is up", timeout=60)
        before = _children(process.pid)
        assert set(before) == {"catalog", "scheduler", "edge", "transformer"}, before
        os.kill(before["scheduler"][0], signal.SIGKILL)
        text = output.wait_for("scheduler started again", timeout=30)
        assert re.search(r"scheduler exited with -9 \(SIGKILL\); restarting in 0\.5 s \(restart 1\)", text), text
        # The new scheduler takes a moment to listen (the edge answers 503 meanwhile): wait on the request itself.
        url = (
            f"http://127.0.0.1:{ports['--port']}/C1233800302-EEDTEST/ogc-api-coverages/1.0.0/collections/blue_var/coverage/"
            "rangeset?granuleid=G1233800343-EEDTEST"
        )
        with MemoryFile(_served(url, timeout=60)).open() as dataset:
            assert dataset.descriptions == ("blue_var",)
        after = _children(process.pid)
        assert after["scheduler"] != before["scheduler"]
        assert {name: pids for name, pids in after.items() if name != "scheduler"} == {
            name: pids for name, pids in before.items() if name != "scheduler"
        }, "only the scheduler was started again"
    finally:
        started = time.monotonic()
        os.killpg(process.pid, signal.SIGINT)
        code = process.wait(timeout=30)
    assert code == 0, output.text()
    assert time.monotonic() - started < 10  # within the grace period
    assert _children(process.pid) == {}
    for pid in after["scheduler"]:  # the restarted scheduler is stopped too
        assert not Path(f"/proc/{pid}").exists()


class _Output:
    """A process's output, read on a thread, so that a test can wait for a line with a timeout."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert process.stdout is not None
        threading.Thread(target=lambda: [self.lines.put(line) for line in process.stdout], daemon=True).start()

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.seen):
            try:
                self.seen.append(self.lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"no {text!r} within {timeout} s:\n{self.text()}") from None
        return self.text()

    def text(self) -> str:
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return "".join(self.seen)


def _children(parent: int) -> dict[str, list[int]]:
    """The `geomesh serve <service>` processes of a parent, by service (four transformers share a name)."""
    found: dict[str, list[int]] = {}
    for entry in Path("/proc").iterdir():
        try:
            stat_fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if int(stat_fields[1]) == parent and b"serve" in arguments:
            found.setdefault(arguments[arguments.index(b"serve") + 1].decode(), []).append(int(entry.name))
    return {name: sorted(pids) for name, pids in found.items()}


def _served(url: str, timeout: float) -> bytes:
    """The body of a GET, asked again until it succeeds or the timeout passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return response.read()
        except (urllib.error.HTTPError, urllib.error.URLError, ConnectionError) as error:
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} still fails after {timeout} s: {error}") from None
            time.sleep(0.2)


def test_users_add_passwd_list_remove(tmp_path: Path) -> None:
    path = tmp_path / "users.yml"
    runner = CliRunner()
    added = runner.invoke(main, ["users", "add", "carol", "--admin", "--password", "--token", "--file", str(path)],
                          input="s3cret pass\ns3cret pass\n")
    assert added.exit_code == 0, added.output
    token = re.search(r"bearer token \(shown only now\): (\S+)", added.output)[1]
    assert "s3cret" not in added.output  # asked for without echo
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token not in path.read_text() and "s3cret" not in path.read_text()
    carol = users.load(path).find("carol")
    assert carol is not None and carol.admin and carol.password_hash.startswith("$argon2id$")

    async def who(authorization: str) -> Caller:
        return await Authenticator(UsersSource(path), None, "anonymous").authenticate(authorization)

    assert asyncio.run(who(f"Bearer {token}")) == Caller("carol", admin=True)
    basic = "Basic " + base64.b64encode(b"carol:s3cret pass").decode()
    assert asyncio.run(who(basic)) == Caller("carol", admin=True)

    again = runner.invoke(main, ["users", "add", "carol", "--token", "--file", str(path)])
    assert again.exit_code == 1 and "already has a user carol" in again.output
    assert runner.invoke(main, ["users", "add", "dan", "--file", str(path)]).exit_code == 2  # neither password nor token
    changed = runner.invoke(main, ["users", "passwd", "carol", "--file", str(path)], input="other\nother\n")
    assert changed.exit_code == 0, changed.output
    assert asyncio.run(who("Basic " + base64.b64encode(b"carol:other").decode())).user == "carol"
    with pytest.raises(UnauthorizedError):
        asyncio.run(who(basic))

    listed = runner.invoke(main, ["users", "list", "--file", str(path)])
    assert listed.output.split() == ["carol", "admin", "password:", "argon2", "tokens:", "1"]
    assert runner.invoke(main, ["users", "remove", "carol", "--file", str(path)]).exit_code == 0
    assert users.load(path).users == []
    missing = runner.invoke(main, ["users", "passwd", "carol", "--file", str(path)], input="x\nx\n")
    assert missing.exit_code == 1 and "has no user carol" in missing.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.yml"]  # no temporary file left


def test_users_passwd_replaces_a_legacy_sha256_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "users.yml"
    path.write_text(f"users:\n  - name: old\n    tokens: [old-token]\n    password_sha256: {hashlib.sha256(b'pw').hexdigest()}\n"
                    "  - name: ops\n    tokens: [ops-token]\n    admin: true\n")
    path.chmod(0o644)
    listed = CliRunner().invoke(main, ["users", "list"], env={"GEOMESH_EDGE_USERS_FILE": str(path)})
    assert "sha256 (legacy: run passwd)" in listed.output
    changed = CliRunner().invoke(main, ["users", "passwd", "old", "--file", str(path)], input="new\nnew\n")
    assert changed.exit_code == 0, changed.output
    old, ops = users.load(path).users
    assert (old.password_sha256, old.tokens, ops.tokens, ops.admin) == (None, ["old-token"], ["ops-token"], True)
    assert users.password_matches(old, "new") and stat.S_IMODE(path.stat().st_mode) == 0o600
    broken = tmp_path / "broken.yml"
    broken.write_text("users: [{name: a, tokens: [t]}, {name: a}]")
    answer = CliRunner().invoke(main, ["users", "list", "--file", str(broken)])
    assert answer.exit_code == 1 and "named more than once: a" in answer.output
