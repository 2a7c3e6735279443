"""The `geomesh` command: start the whole mesh (`up`), one service (`serve`), or make demo data (`demo`)."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

from geomesh import jobs_cli, users_cli
from geomesh.settings import TRANSFORMER_FAMILIES

SERVICES = ("catalog", "transformer", "scheduler", "edge")


@click.group()
def main() -> None:
    """geomesh: take exactly the Earth-observation data you need."""


main.add_command(jobs_cli.jobs_command)
main.add_command(jobs_cli.status_command)
main.add_command(jobs_cli.wait_command)
main.add_command(jobs_cli.download_command)
main.add_command(users_cli.users_command)


@main.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path(".data"), show_default=True)
def demo(data_dir: Path) -> None:
    """Generate the demo catalog and its granules (if not there yet)."""
    from catalog.demo.generate import ensure_demo

    click.echo(f"demo catalog: {ensure_demo(data_dir.resolve())}")


@main.command()
@click.argument("service", type=click.Choice(SERVICES))
def serve(service: str) -> None:
    """Run one service; settings come from GEOMESH_<SERVICE>_* environment variables."""
    asyncio.run(_serve(service))


async def _serve(service: str) -> None:
    from geomesh import logs, settings, tracing
    from geomesh.rpc import run_until_signalled

    chosen: settings._Service = {
        "edge": settings.EdgeSettings,
        "catalog": settings.CatalogSettings,
        "scheduler": settings.SchedulerSettings,
        "transformer": settings.TransformerSettings,
    }[service]()
    name = f"transformer-{chosen.family}" if isinstance(chosen, settings.TransformerSettings) else service
    logs.configure(name, chosen.log_level, chosen.log_format)
    provider = tracing.configure(name)
    try:
        if isinstance(chosen, settings.EdgeSettings):
            from edge.app import serve as serve_edge

            runner = await serve_edge(chosen)
            stop = asyncio.Event()
            for signum in (signal.SIGTERM, signal.SIGINT):
                asyncio.get_running_loop().add_signal_handler(signum, stop.set)
            await stop.wait()
            await runner.cleanup()
            return
        if isinstance(chosen, settings.CatalogSettings):
            from catalog.service import serve as serve_catalog

            running = await serve_catalog(chosen)
        elif isinstance(chosen, settings.SchedulerSettings):
            from scheduler.service import serve as serve_scheduler

            running = await serve_scheduler(chosen)
        else:
            assert isinstance(chosen, settings.TransformerSettings)
            family = importlib.import_module(f"transformers.{chosen.family}.service")
            running = await family.serve(chosen)
        await run_until_signalled(running)
    finally:
        if provider is not None:  # spans still queued are sent before the process ends
            provider.shutdown()


@dataclass
class _Ports:
    host: str
    edge: int
    scheduler: int
    catalog: int
    transformer: int  # the first family's; the others take the ports after it
    metrics: int  # first of the consecutive ports for the gRPC services' /metrics

    @property
    def transformers(self) -> dict[str, int]:
        return {family: self.transformer + i for i, family in enumerate(TRANSFORMER_FAMILIES)}

    @property
    def grpc(self) -> dict[str, int]:
        """Each process's gRPC port, in start order."""
        return {
            "catalog": self.catalog,
            **{f"transformer-{family}": port for family, port in self.transformers.items()},
            "scheduler": self.scheduler,
        }


def _environments(ports: _Ports, data_dir: Path) -> dict[str, dict[str, str]]:
    """Each service's settings. Only the edge listens on `--host`: the gRPC services and their
    metrics stay on loopback, proving who they are to each other with the mesh's certificates."""
    host, loopback = ports.host, "127.0.0.1"
    metrics = {name: ports.metrics + i for i, name in enumerate(ports.grpc)}
    # Every service's lines go to this terminal: plain text unless GEOMESH_LOG_FORMAT says otherwise.
    mesh = {**_mesh_environment(data_dir), "GEOMESH_LOG_FORMAT": os.environ.get("GEOMESH_LOG_FORMAT", "text")}
    transformers = {
        f"transformer-{family}": {
            **mesh,
            "GEOMESH_TRANSFORMER_FAMILY": family,
            "GEOMESH_TRANSFORMER_HOST": loopback,
            "GEOMESH_TRANSFORMER_PORT": str(port),
            "GEOMESH_TRANSFORMER_METRICS_PORT": str(metrics[f"transformer-{family}"]),
            # The demo's granules, and nothing else on this machine.
            "GEOMESH_TRANSFORMER_ALLOWED_URLS": os.environ.get(
                "GEOMESH_TRANSFORMER_ALLOWED_URLS", (data_dir / "granules").resolve().as_uri() + "/"
            ),
        }
        for family, port in ports.transformers.items()
    }
    return {
        "catalog": {
            **mesh,
            "GEOMESH_CATALOG_HOST": loopback,
            "GEOMESH_CATALOG_PORT": str(ports.catalog),
            "GEOMESH_CATALOG_METRICS_PORT": str(metrics["catalog"]),
            "GEOMESH_CATALOG_DATA_DIR": str(data_dir),
            # read by services.yml
            **{f"GEOMESH_{family.upper()}_ADDRESSES": f"{loopback}:{port}" for family, port in ports.transformers.items()},
        },
        **transformers,
        "scheduler": {
            **mesh,
            "GEOMESH_SCHEDULER_HOST": loopback,
            "GEOMESH_SCHEDULER_PORT": str(ports.scheduler),
            "GEOMESH_SCHEDULER_METRICS_PORT": str(metrics["scheduler"]),
            "GEOMESH_SCHEDULER_CATALOG_ADDRESS": f"{loopback}:{ports.catalog}",
            "GEOMESH_SCHEDULER_DATA_DIR": str(data_dir),
        },
        "edge": {
            **mesh,
            "GEOMESH_EDGE_HOST": host,
            "GEOMESH_EDGE_PORT": str(ports.edge),
            "GEOMESH_EDGE_SCHEDULER_ADDRESS": f"{loopback}:{ports.scheduler}",
            "GEOMESH_EDGE_CATALOG_ADDRESS": f"{loopback}:{ports.catalog}",
        },
    }


def _mesh_environment(data_dir: Path) -> dict[str, str]:
    """Mutual TLS between the services, with certificates made in the data folder on first use;
    GEOMESH_MESH_* settings already in the environment take precedence."""
    if any(key.startswith("GEOMESH_MESH_") for key in os.environ):
        return {}
    from geomesh.identity import SERVICES, make_certificates

    folder = (data_dir / "certs").resolve()
    if not all((folder / f"{identity}.pem").exists() for identity in SERVICES):
        make_certificates(folder)
    return {"GEOMESH_MESH_TLS_DIR": str(folder)}


@main.command()
def migrate() -> None:
    """Bring the job store (GEOMESH_SCHEDULER_DATABASE_URL, or the data folder's SQLite) to the newest
    schema, and exit: run it once before schedulers that start with GEOMESH_SCHEDULER_MIGRATE=false.
    Schedulers migrating at once take turns (PostgreSQL's advisory lock)."""
    from geomesh.settings import SchedulerSettings
    from scheduler.jobs.store import JobStore

    settings = SchedulerSettings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    async def run() -> None:
        store = await JobStore.open(settings.resolved_database_url)
        await store.close()

    asyncio.run(run())
    click.echo(f"the job store is at the newest schema: {settings.resolved_database_url.split('@')[-1]}")


@main.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--identity", "identities", multiple=True, help="A certificate for this identity (repeat); default: every service.")
@click.option("--days", default=3650, show_default=True, help="How long the certificates are valid.")
def certs(folder: Path, identities: tuple[str, ...], days: int) -> None:
    """Make the mesh's CA in FOLDER (kept if there) and a certificate per identity, for mutual TLS
    between the services (GEOMESH_MESH_TLS_DIR=FOLDER). A tool that calls a service directly gets one
    of its own, e.g. --identity ops, allowed by GEOMESH_MESH_EXTRA_CALLERS='{"scheduler": ["ops"]}'."""
    from geomesh.identity import SERVICES, make_certificates

    for path in make_certificates(folder, identities or SERVICES, days):
        click.echo(path)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the edge binds to (the other services stay on loopback).")
@click.option("--port", "edge_port", default=3000, show_default=True, help="HTTP port of the edge.")
@click.option("--scheduler-port", default=50051, show_default=True)
@click.option("--catalog-port", default=50052, show_default=True)
@click.option("--transformer-port", default=50061, show_default=True, help="First of one port per transformer family.")
@click.option("--metrics-port", default=9151, show_default=True, help="First of the ports for the gRPC services' /metrics.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path(".data"), show_default=True)
def up(
    host: str, edge_port: int, scheduler_port: int, catalog_port: int, transformer_port: int, metrics_port: int, data_dir: Path
) -> None:
    """Start every service as its own process on this machine, with the demo catalog."""
    from catalog.demo.generate import ensure_demo

    data_dir = data_dir.resolve()
    if not (data_dir / "catalog.json").exists():
        click.echo(f"generating demo data in {data_dir} ...")
    ensure_demo(data_dir)
    ports = _Ports(host, edge_port, scheduler_port, catalog_port, transformer_port, metrics_port)
    environments = _environments(ports, data_dir)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s up %(levelname)s: %(message)s")
    services: dict[str, _Supervised] = {}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for name, environment in environments.items():
            services[name] = _Supervised(name, environment)
        _wait_until_ready(ports, {name: service.process for name, service in services.items()})
        click.echo(
            f"geomesh is up:\n"
            f"  edge        http://{host}:{ports.edge}/  (try http://{host}:{ports.edge}/C1233800302-EEDTEST/ogc-api-coverages/1.0.0/)\n"
            f"  metrics     http://{host}:{ports.edge}/metrics, "
            f"http://{host}:{ports.metrics}..{ports.metrics + len(ports.grpc) - 1}/metrics\n"
            f"  scheduler   {host}:{ports.scheduler} (gRPC)\n"
            f"  catalog     {host}:{ports.catalog} (gRPC)\n"
            + "".join(f"  transformer {host}:{port} (gRPC, {family})\n" for family, port in ports.transformers.items())
            + "press Ctrl-C to stop"
        )
        # Supervision: a service that dies is started again, the others keep serving meanwhile.
        while not stopping:
            now = time.monotonic()
            for service in services.values():
                service.supervise(now)
            time.sleep(0.2)
    finally:
        _stop_all({name: service.process for name, service in services.items()})


# A service that dies under `geomesh up` is started again after RESTART_DELAY, doubled at each
# restart in a row up to MAX_RESTART_DELAY; one that stayed up STABLE_SECONDS counts from the start.
RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
STABLE_SECONDS = 60.0


class _Supervised:
    """One process of `geomesh up` (a service), restarted with exponential backoff whenever it dies."""

    def __init__(self, name: str, environment: dict[str, str]) -> None:
        self.name = name
        self.environment = environment
        self.restarts = 0  # in a row
        self.due: float | None = None  # when a process that died is started again
        self.started = time.monotonic()
        self.process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        self.started = time.monotonic()
        service = self.name.split("-", 1)[0]  # transformer-gdal -> transformer
        env = {**os.environ, **self.environment}
        return subprocess.Popen([sys.executable, "-m", "geomesh.cli", "serve", service], env=env)

    def supervise(self, now: float) -> None:
        """Notice that the process died (and say so), or start it again once its delay is over."""
        if self.due is None:
            code = self.process.poll()
            if code is None:
                return
            if now - self.started >= STABLE_SECONDS:
                self.restarts = 0
            delay = min(RESTART_DELAY * 2 ** min(self.restarts, 16), MAX_RESTART_DELAY)
            self.restarts += 1
            self.due = now + delay
            logging.getLogger("geomesh.up").warning(
                "%s exited with %s; restarting in %.1f s (restart %d)", self.name, _exit_status(code), delay, self.restarts
            )
        elif now >= self.due:
            self.due = None
            self.process = self._start()
            logging.getLogger("geomesh.up").info("%s started again (pid %d)", self.name, self.process.pid)


def _exit_status(code: int) -> str:
    """-9 (SIGKILL) for a process killed by a signal, else the exit code."""
    if code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return str(code)


def _wait_until_ready(ports: _Ports, children: dict[str, subprocess.Popen[bytes]], timeout: float = 60) -> None:
    """Until the edge's /health says every dependency is up (transformers' workers started too)."""
    import urllib.error
    import urllib.request

    host = "127.0.0.1" if ports.host in ("0.0.0.0", "::", "") else ports.host
    url = f"http://{host}:{ports.edge}/health"
    deadline = time.monotonic() + timeout
    said = "no answer yet"
    while True:
        for name, child in children.items():
            if child.poll() is not None:
                raise click.ClickException(f"{name} exited during start-up (code {child.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except urllib.error.HTTPError as error:  # 503: some dependency is not up yet
            said = error.read().decode(errors="replace")
        except OSError as error:  # the edge is not listening yet
            said = str(error)
        if time.monotonic() > deadline:
            raise click.ClickException(f"geomesh did not become healthy within {timeout:.0f} s: {said}")
        time.sleep(0.2)


def _stop_all(children: dict[str, subprocess.Popen[bytes]], grace: float = 10) -> None:
    # Stop in reverse order: the edge stops taking requests before the services behind it go.
    for child in reversed(list(children.values())):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


if __name__ == "__main__":
    main()
