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

from geomesh import jobs_cli
from geomesh.settings import TRANSFORMER_FAMILIES

SERVICES = ("catalog", "transformer", "scheduler", "edge")


@click.group()
def main() -> None:
    """geomesh: take exactly the Earth-observation data you need."""


main.add_command(jobs_cli.jobs_command)
main.add_command(jobs_cli.status_command)
main.add_command(jobs_cli.wait_command)
main.add_command(jobs_cli.download_command)


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
    logging.basicConfig(
        level=os.environ.get("GEOMESH_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(_serve(service))


async def _serve(service: str) -> None:
    from geomesh import settings
    from geomesh.rpc import run_until_signalled

    if service == "edge":
        from edge.app import serve as serve_edge

        runner = await serve_edge(settings.EdgeSettings())
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await stop.wait()
        await runner.cleanup()
        return
    if service == "catalog":
        from catalog.service import serve as serve_catalog
        running = await serve_catalog(settings.CatalogSettings())
    elif service == "scheduler":
        from scheduler.service import serve as serve_scheduler
        running = await serve_scheduler(settings.SchedulerSettings())
    else:
        transformer = settings.TransformerSettings()
        family = importlib.import_module(f"transformers.{transformer.family}.service")
        running = await family.serve(transformer)
    await run_until_signalled(running)


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
    host = ports.host
    metrics = {name: ports.metrics + i for i, name in enumerate(ports.grpc)}
    transformers = {
        f"transformer-{family}": {
            "GEOMESH_TRANSFORMER_FAMILY": family,
            "GEOMESH_TRANSFORMER_HOST": host,
            "GEOMESH_TRANSFORMER_PORT": str(port),
            "GEOMESH_TRANSFORMER_METRICS_PORT": str(metrics[f"transformer-{family}"]),
        }
        for family, port in ports.transformers.items()
    }
    return {
        "catalog": {
            "GEOMESH_CATALOG_HOST": host,
            "GEOMESH_CATALOG_PORT": str(ports.catalog),
            "GEOMESH_CATALOG_METRICS_PORT": str(metrics["catalog"]),
            "GEOMESH_CATALOG_DATA_DIR": str(data_dir),
            # read by services.yml
            **{f"GEOMESH_{family.upper()}_ADDRESSES": f"{host}:{port}" for family, port in ports.transformers.items()},
        },
        **transformers,
        "scheduler": {
            "GEOMESH_SCHEDULER_HOST": host,
            "GEOMESH_SCHEDULER_PORT": str(ports.scheduler),
            "GEOMESH_SCHEDULER_METRICS_PORT": str(metrics["scheduler"]),
            "GEOMESH_SCHEDULER_CATALOG_ADDRESS": f"{host}:{ports.catalog}",
            "GEOMESH_SCHEDULER_DATA_DIR": str(data_dir),
        },
        "edge": {
            "GEOMESH_EDGE_HOST": host,
            "GEOMESH_EDGE_PORT": str(ports.edge),
            "GEOMESH_EDGE_SCHEDULER_ADDRESS": f"{host}:{ports.scheduler}",
            "GEOMESH_EDGE_CATALOG_ADDRESS": f"{host}:{ports.catalog}",
        },
    }


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address every service binds to.")
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
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for name, environment in environments.items():
            service = name.split("-", 1)[0]  # transformer-gdal -> transformer
            env = {**os.environ, **environment}
            children[name] = subprocess.Popen([sys.executable, "-m", "geomesh.cli", "serve", service], env=env)
        _wait_until_ready(ports, children)
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
        while not stopping:
            exited = [name for name, child in children.items() if child.poll() is not None]
            if exited:
                raise click.ClickException(f"{', '.join(exited)} stopped unexpectedly; stopping the others")
            time.sleep(0.2)
    finally:
        _stop_all(children)


def _wait_until_ready(ports: _Ports, children: dict[str, subprocess.Popen[bytes]], timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    pending = {**ports.grpc, "edge": ports.edge}
    while pending:
        for name, port in list(pending.items()):
            if children[name].poll() is not None:
                raise click.ClickException(f"{name} exited during start-up (code {children[name].returncode})")
            with socket.socket() as probe:
                probe.settimeout(0.2)
                if probe.connect_ex((ports.host, port)) == 0:
                    del pending[name]
        if time.monotonic() > deadline:
            raise click.ClickException(f"{', '.join(pending)} did not start within {timeout:.0f} s")
        time.sleep(0.1)


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
