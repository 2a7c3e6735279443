"""`geomesh up`: every service as its own process, answering the seed's request, stopped cleanly by SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from rasterio.io import MemoryFile

import transformers
from tests.loopback import up_ports


def test_our_transformers_package_is_the_one_imported() -> None:
    # `transformers` is also the ML library's import name: make sure ours is installed, not theirs.
    assert Path(transformers.__file__).parent == Path(__file__).parents[1] / "transformers"


def test_up_serves_the_seed_request_and_stops_on_sigterm(demo_dir: Path) -> None:
    ports = up_ports()
    edge, metrics = ports["--port"], ports["--metrics-port"]
    command = [sys.executable, "-m", "geomesh.cli", "up", "--data-dir", str(demo_dir)]
    command += [str(part) for option, port in ports.items() for part in (option, port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
