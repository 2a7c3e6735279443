"""The container image's recipe (deploy/docker/), checked without docker: the Dockerfile's sources are in
the build context, it runs `geomesh serve` as a non-root user with healthcheck.py as its HEALTHCHECK,
the wheelhouse list follows pyproject.toml, the scripts parse; and healthcheck.py itself against real
gRPC servers (plain and mutual TLS) and a real HTTP server. With docker and a built image, a few
checks of the image itself (slow)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import pytest_asyncio
from aiohttp import web
from grpc_health.v1 import health_pb2

from geomesh.identity import MeshSettings, make_certificates
from geomesh.rpc import RunningServer, start_server
from tests.loopback import serve_app

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = ROOT / "deploy" / "docker"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
HEALTHCHECK = DOCKER_DIR / "healthcheck.py"
SCRIPTS = sorted(DOCKER_DIR.glob("*.sh"))
IMAGE = os.environ.get("GEOMESH_IMAGE", "geomesh:latest")
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def load(path: Path) -> ModuleType:
    """A script of deploy/docker (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


healthcheck = load(HEALTHCHECK)
requirements = load(DOCKER_DIR / "requirements.py")


# -- the Dockerfile ----------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    arguments: str

    def words(self) -> list[str]:
        if self.arguments.startswith("["):
            return list(json.loads(self.arguments))
        return shlex.split(self.arguments)


@dataclass
class Stage:
    name: str
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def stages(text: str) -> list[Stage]:
    """The Dockerfile's stages, continuation lines joined and comments dropped."""
    found: list[Stage] = []
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        keyword, _, arguments = (logical + line).partition(" ")
        logical = ""
        instruction = Instruction(keyword.upper(), arguments.strip())
        if instruction.keyword == "FROM":
            words = instruction.words()
            found.append(Stage(words[2] if len(words) > 2 and words[1].upper() == "AS" else str(len(found)), []))
        if found:
            found[-1].instructions.append(instruction)
    return found


STAGES = stages(DOCKERFILE.read_text())
RUNTIME = STAGES[-1]


def copy_sources(instruction: Instruction) -> list[str]:
    words = [word for word in instruction.words() if not word.startswith("--")]
    return words[:-1]


def local_copies() -> list[str]:
    return [
        source
        for stage in STAGES
        for copy in stage.all("COPY")
        if "--from=" not in copy.arguments
        for source in copy_sources(copy)
    ]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether docker leaves `path` out of the build context: the last pattern matching it or one of
    its parent folders decides, `!` bringing it back (moby's patternmatcher)."""
    verdict = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        cleaned = pattern.removeprefix("!").strip().strip("/")
        regex = "".join(
            ".*" if part == "**" else "[^/]*" if part == "*" else "[^/]" if part == "?" else re.escape(part)
            for part in re.split(r"(\*\*|\*|\?)", cleaned)
        )
        parts = path.strip("/").split("/")
        if any(re.fullmatch(regex, "/".join(parts[:end])) for end in range(1, len(parts) + 1)):
            verdict = not negated
    return verdict


def dockerignore() -> list[str]:
    lines = (DOCKER_DIR / "Dockerfile.dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_every_copy_source_exists_and_is_in_the_build_context() -> None:
    sources = local_copies()
    assert "deploy/docker/healthcheck.py" in sources and "pyproject.toml" in sources
    patterns = dockerignore()
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        assert not ignored(source, patterns), f"COPY {source}: Dockerfile.dockerignore leaves it out of the context"


def test_the_build_context_leaves_out_what_the_image_is_not_built_from() -> None:
    patterns = dockerignore()
    for path in (".venv/bin/python", ".data/catalog.json", ".git/HEAD", "tests/conftest.py",
                 "geomesh/v1/catalog_pb2.py", "geomesh/v1/catalog_pb2_grpc.py", "edge/__pycache__/app.cpython-311.pyc"):
        assert ignored(path, patterns), f"{path} would be sent to docker as part of the build context"
    for path in ("geomesh/cli.py", "protos/geomesh/v1/catalog.proto", "catalog/services.yml",
                 "deploy/docker/wheelhouse/numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl"):
        assert not ignored(path, patterns), f"{path} is left out of the build context"


def test_stages_refer_only_to_stages_defined_before_them() -> None:
    names = [stage.name for stage in STAGES]
    for index, stage in enumerate(STAGES):
        for instruction in stage.instructions:
            for used in re.findall(r"from=([\w.-]+)", instruction.arguments):
                assert used in names[:index], f"stage {stage.name}: {instruction.keyword} from={used}, no stage before it"


def test_the_runtime_stage_runs_as_a_numeric_non_root_user() -> None:
    users = RUNTIME.all("USER")
    assert users, "the runtime stage sets no USER: it would run as root"
    user = users[-1].arguments.split(":")[0]
    assert user.isdigit() and int(user) != 0, f"USER {users[-1].arguments}: Kubernetes' runAsNonRoot needs a non-zero numeric uid"
    runs = " ".join(run.arguments for run in RUNTIME.all("RUN"))
    assert f"--uid {user}" in runs, f"uid {user} is not created in the runtime stage"
    last_user = max(i for i, instruction in enumerate(RUNTIME.instructions) if instruction.keyword == "USER")
    assert all(instruction.keyword != "RUN" for instruction in RUNTIME.instructions[last_user:])


def test_the_image_runs_geomesh_serve_with_the_edge_by_default() -> None:
    (entrypoint,) = RUNTIME.all("ENTRYPOINT")
    (command,) = RUNTIME.all("CMD")
    assert entrypoint.words() == ["geomesh", "serve"]
    assert command.words() in (["edge"], ["scheduler"], ["catalog"], ["transformer"])
    assert entrypoint.arguments.startswith("["), "shell form would make sh PID 1, and SIGTERM would not reach geomesh"


def test_the_healthcheck_runs_healthcheck_py_where_the_image_copies_it() -> None:
    (check,) = RUNTIME.all("HEALTHCHECK")
    command = check.arguments.split(" CMD ", 1)[1]
    words = json.loads(command)
    script = next(word for word in words if word.endswith("healthcheck.py"))
    copies = [copy.words() for copy in RUNTIME.all("COPY")]
    assert ["deploy/docker/healthcheck.py", script] in copies
    assert words[0].startswith("/opt/venv/"), "the probe needs the venv's grpcio"


def test_build_arguments_that_change_every_build_come_after_every_run() -> None:
    # A build argument is in the environment of each RUN after it: a new date or revision would rebuild them all.
    positions = {i.arguments.split("=")[0]: n for n, i in enumerate(RUNTIME.instructions) if i.keyword == "ARG"}
    last_run = max(n for n, i in enumerate(RUNTIME.instructions) if i.keyword == "RUN")
    for argument in ("VERSION", "REVISION", "CREATED"):
        assert positions[argument] > last_run, f"ARG {argument} before a RUN"


def test_the_build_runs_offline_from_the_wheelhouse() -> None:
    installs = [run.arguments for stage in STAGES[1:] for run in stage.all("RUN") if " install " in run.arguments]
    assert installs and all("--no-index" in run for run in installs)


# -- the wheelhouse's requirements ---------------------------------------------------------------------


def test_the_wheelhouse_holds_exactly_the_pinned_dependencies_and_build_requirements() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = requirements.requirements(ROOT / "pyproject.toml")
    expected = [*pyproject["build-system"]["requires"], *pyproject["project"]["dependencies"]]
    assert listed[: len(expected)] == expected
    assert len(listed) == len(expected) + 1 and listed[-1].startswith("pip==")
    assert requirements.requirements(ROOT / "pyproject.toml", runtime=True) == pyproject["project"]["dependencies"]


def test_requirements_py_prints_one_requirement_a_line() -> None:
    script = str(DOCKER_DIR / "requirements.py")
    full = subprocess.run([sys.executable, script, str(ROOT / "pyproject.toml")], capture_output=True, text=True, check=True)
    runtime = subprocess.run([sys.executable, script, "--runtime"], capture_output=True, text=True, check=True)
    assert full.stdout.splitlines() == requirements.requirements(ROOT / "pyproject.toml")
    assert runtime.stdout.splitlines() == requirements.requirements(ROOT / "pyproject.toml", runtime=True)


def test_the_wheelhouse_is_kept_out_of_git() -> None:
    lines = (DOCKER_DIR / "wheelhouse" / ".gitignore").read_text().splitlines()
    assert "*" in lines and "!.gitignore" in lines


# -- the scripts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_the_scripts_parse(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_scripts_pass_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(["shellcheck", "-x", *map(str, SCRIPTS)], capture_output=True, text=True, cwd=DOCKER_DIR)
    assert result.returncode == 0, result.stdout


def test_the_entry_scripts_are_executable() -> None:
    for name in ("build-offline.sh", "e2e.sh"):
        assert os.access(DOCKER_DIR / name, os.X_OK), f"{name} is not executable (make image / make e2e-docker run it)"


# -- healthcheck.py against real servers ---------------------------------------------------------------


async def probe(*argv: str, environ: dict[str, str] | None = None) -> int:
    """healthcheck.main in a thread: its gRPC call is blocking, and the server answers on this loop."""
    return await asyncio.to_thread(healthcheck.main, [*argv, "--quiet", "--timeout", "5"], environ or {})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest_asyncio.fixture(loop_scope="session")
async def plain_server() -> AsyncIterator[RunningServer]:
    server = await start_server("scheduler", lambda s: None, [], identity="scheduler", mesh=MeshSettings(insecure=True))
    yield server
    await server.stop(0)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    make_certificates(folder)  # as `geomesh certs` makes them: every service's identity
    return folder


@pytest_asyncio.fixture(loop_scope="session")
async def tls_server(certs: Path) -> AsyncIterator[RunningServer]:
    server = await start_server("catalog", lambda s: None, [], identity="catalog", mesh=MeshSettings(tls_dir=certs))
    yield server
    await server.stop(0)


async def test_a_serving_grpc_service_is_ready_and_live(plain_server: RunningServer) -> None:
    port = str(plain_server.port)
    assert await probe("scheduler", "--port", port) == 0
    assert await probe("scheduler", "--port", port, "--live") == 0


async def test_a_not_serving_grpc_service_is_live_but_not_ready(plain_server: RunningServer) -> None:
    await plain_server.health.set("", NOT_SERVING)
    port = str(plain_server.port)
    assert await probe("scheduler", "--port", port) == 1
    assert await probe("scheduler", "--port", port, "--live") == 0
    await plain_server.health.set("", SERVING)
    assert await probe("scheduler", "--port", port) == 0


async def test_nothing_listening_is_neither_live_nor_ready() -> None:
    port = str(free_port())
    for service in ("scheduler", "edge"):
        assert await probe(service, "--port", port) == 1
        assert await probe(service, "--port", port, "--live") == 1


async def test_the_port_and_host_come_from_the_services_own_settings(plain_server: RunningServer) -> None:
    environ = {"GEOMESH_SERVICE": "transformer", "GEOMESH_TRANSFORMER_HOST": "0.0.0.0", "GEOMESH_TRANSFORMER_PORT": str(plain_server.port)}
    assert await probe(environ=environ) == 0  # a wildcard address is probed on loopback
    assert await probe(environ={"GEOMESH_SCHEDULER_PORT": str(plain_server.port)}) == 1  # which service? none named


async def test_mutual_tls_probes_present_the_services_own_certificate(tls_server: RunningServer, certs: Path, tmp_path: Path) -> None:
    port = str(tls_server.port)
    mesh = {"GEOMESH_MESH_TLS_DIR": str(certs)}
    assert await probe("catalog", "--port", port, environ=mesh) == 0
    await tls_server.health.set("", NOT_SERVING)
    assert await probe("catalog", "--port", port, environ=mesh) == 1
    assert await probe("catalog", "--port", port, "--live", environ=mesh) == 0
    await tls_server.health.set("", SERVING)

    # No certificate, another mesh's, or a server that is not the service named: no handshake, no answer.
    strangers = tmp_path / "strangers"
    make_certificates(strangers)
    for service, environ in (("catalog", {}), ("catalog", {"GEOMESH_MESH_TLS_DIR": str(strangers)}), ("scheduler", mesh)):
        assert await probe(service, "--port", port, environ=environ) == 1, (service, environ)
        assert await probe(service, "--port", port, "--live", environ=environ) == 1, (service, environ)


async def test_unreadable_certificates_fail_the_probe(tls_server: RunningServer, tmp_path: Path) -> None:
    assert await probe("catalog", "--port", str(tls_server.port), environ={"GEOMESH_MESH_TLS_DIR": str(tmp_path / "none")}) == 1


@pytest_asyncio.fixture(loop_scope="session")
async def edge_like() -> AsyncIterator[tuple[int, dict[str, int]]]:
    """An HTTP server answering /readiness with the status in `answer`."""
    answer = {"status": 200}

    async def readiness(request: web.Request) -> web.Response:
        return web.Response(status=answer["status"], text="OK" if answer["status"] == 200 else "not yet")

    app = web.Application()
    app.router.add_get("/readiness", readiness)
    async with serve_app(app) as url:
        yield int(url.rsplit(":", 1)[1]), answer


async def test_the_edge_is_ready_on_200_and_live_on_any_answer(edge_like: tuple[int, dict[str, int]]) -> None:
    port, answer = edge_like
    assert await probe("edge", "--port", str(port)) == 0
    assert await probe("edge", "--port", str(port), "--live") == 0
    answer["status"] = 503
    assert await probe("edge", "--port", str(port)) == 1
    assert await probe("edge", "--port", str(port), "--live") == 0
    answer["status"] = 404  # an edge without /readiness answers, but is not ready
    assert await probe("edge", "--port", str(port)) == 1


async def test_the_script_exits_with_its_verdict(plain_server: RunningServer) -> None:
    """As docker and the kubelet run it: a process whose exit status is the answer, the reason printed."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GEOMESH_")}

    async def run(*argv: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(HEALTHCHECK), *argv, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        assert process.returncode is not None
        return process.returncode, output.decode()

    port = str(plain_server.port)
    assert await run("scheduler", "--port", port) == (0, f"healthcheck (ready): scheduler at 127.0.0.1:{port}: SERVING\n")
    await plain_server.health.set("", NOT_SERVING)
    try:
        assert await run("scheduler", "--port", port) == (1, f"healthcheck (ready): scheduler at 127.0.0.1:{port}: NOT_SERVING\n")
        assert await run("scheduler", "--port", port, "--live") == (0, f"healthcheck (live): scheduler at 127.0.0.1:{port}: NOT_SERVING\n")
    finally:
        await plain_server.health.set("", SERVING)
    code, said = await run("catalog", "--port", str(free_port()), "--timeout", "2")
    assert code == 1 and "UNAVAILABLE" in said


def test_the_service_is_read_from_pid_1s_command_line(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    for words, service in (
        (["/opt/venv/bin/python", "/opt/venv/bin/geomesh", "serve", "transformer"], "transformer"),
        (["/sbin/docker-init", "--", "geomesh", "serve", "edge"], "edge"),
        (["/bin/sh", "-c", "sleep 1"], None),
    ):
        cmdline.write_bytes(b"\0".join(word.encode() for word in words) + b"\0")
        assert healthcheck.running_service(cmdline) == service
    assert healthcheck.running_service(tmp_path / "absent") is None


# -- the image itself, when docker and a built image are here (make image) ---------------------------------


def docker_environment() -> dict[str, str]:
    """An environment whose docker reaches a daemon holding IMAGE: as it is, or the dockerd that
    build-offline.sh leaves under its work folder; skips the test otherwise."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client here")
    work = Path(os.environ.get("GEOMESH_DOCKER_WORK", "/var/tmp/geomesh-docker"))
    candidates = [dict(os.environ)]
    if (work / "docker.sock").exists():
        candidates.append(dict(os.environ, DOCKER_HOST=f"unix://{work / 'docker.sock'}"))
    for env in candidates:
        found = subprocess.run([docker, "image", "inspect", IMAGE], capture_output=True, env=env, timeout=30)
        if found.returncode == 0:
            return env
    pytest.skip(f"no docker daemon here holds {IMAGE} (make image builds it)")


@pytest.fixture(scope="module")
def docker_env() -> dict[str, str]:
    return docker_environment()


def docker(env: dict[str, str], *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *argv], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.slow
def test_the_image_runs_as_geomesh_and_serves_each_service(docker_env: dict[str, str]) -> None:
    assert docker(docker_env, "run", "--rm", "--network", "none", "--entrypoint", "id", IMAGE, "-u").stdout.strip() == "10001"
    helped = docker(docker_env, "run", "--rm", "--network", "none", IMAGE, "--help")
    assert helped.returncode == 0 and "Run one service" in helped.stdout, helped.stderr
    refused = docker(docker_env, "run", "--rm", "--network", "none", IMAGE, "scheduler")
    assert refused.returncode != 0 and "GEOMESH_MESH_TLS_DIR" in refused.stderr, "a service without a mesh identity must not start"


@pytest.mark.slow
def test_a_container_turns_healthy_and_answers_the_liveness_probe(docker_env: dict[str, str]) -> None:
    name = f"geomesh-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    started = docker(
        docker_env, "run", "--detach", "--name", name, "--network", "host", "--health-interval", "1s",
        "-e", "GEOMESH_MESH_INSECURE=true", "-e", "GEOMESH_TRANSFORMER_HOST=127.0.0.1", "-e", f"GEOMESH_TRANSFORMER_PORT={port}",
        IMAGE, "transformer",
    )
    assert started.returncode == 0, started.stderr
    try:
        deadline = time.monotonic() + 90
        status = "starting"
        while status == "starting" and time.monotonic() < deadline:
            status = docker(docker_env, "inspect", "--format", "{{.State.Health.Status}}", name).stdout.strip()
            time.sleep(0.5)
        assert status == "healthy", docker(docker_env, "logs", name).stderr[-2000:]
        live = docker(docker_env, "exec", name, "python", "/opt/geomesh/healthcheck.py", "--live")
        assert (live.returncode, live.stdout) == (0, f"healthcheck (live): transformer at 127.0.0.1:{port}: SERVING\n")
    finally:
        docker(docker_env, "rm", "--force", name)
