"""Raster work in worker processes: one task at a time each, stopped at once when its caller goes.

A thread cannot be stopped; a process can. Each transformer runs its GDAL/NetCDF work in a few
worker processes (started from a fork server that has the families' modules loaded, so a new
worker costs milliseconds): a task whose caller cancels (a client that disconnects, a deadline)
gets its worker killed within a poll interval, its scratch folder removed, and a fresh worker in
its place. A worker that grows past its memory limit is killed the same way and the task fails
with a 413, before the machine runs short; one that dies (a crash in a library) fails only its
own task. Each worker keeps its own open datasets and GDAL cache, sized by settings.

Work functions run in the worker with `current()` giving its state (the family's open datasets,
data access, this task's scratch folder): they and their arguments must pickle.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from geomesh.errors import (
    GeomeshError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    TooManyRequestsError,
    TransformError,
)
from geomesh.metrics import (
    TRANSFORMER_QUEUED,
    TRANSFORMER_REFUSED,
    TRANSFORMER_WORKERS,
    TRANSFORMER_WORKERS_BUSY,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
POLL_SECONDS = 0.2  # how often a running task's worker is checked (memory, caller gone)
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
# The fork server imports these once; every worker forked from it has them loaded.
PRELOAD = ["transformers.gdal.service", "transformers.netcdf.service", "transformers.swath.service"]
_PR_SET_PDEATHSIG = 1


@dataclass
class WorkerState:
    """What a worker keeps between tasks; `scratch` is the running task's own folder."""

    family: str
    resources: Any  # the family's, made by its setup function (open datasets, data access, ...)
    scratch: Path = Path()


_state: WorkerState | None = None


def current() -> WorkerState:
    """The calling worker's state (inside a task)."""
    if _state is None:
        raise RuntimeError("not in a transformer worker process")
    return _state


def _worker_main(connection: multiprocessing.connection.Connection, family: str, setup: Callable[[], Any], gdal_cache_bytes: int) -> None:
    """A worker's life: set up once, then run tasks until the pipe closes."""
    global _state
    # Dies with the fork server, which dies with the transformer: no orphan keeps working.
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the transformer's to handle
    os.environ["GDAL_CACHEMAX"] = str(max(1, gdal_cache_bytes // (1024 * 1024)))
    _state = WorkerState(family, setup())
    while True:
        try:
            scratch, task = connection.recv()
        except (EOFError, OSError):
            return
        _state.scratch = Path(scratch)
        _state.scratch.mkdir(parents=True, exist_ok=True)
        try:
            outcome: tuple[str, Any] = ("ok", task())
        except GeomeshError as error:
            outcome = ("error", error)
        except BaseException:  # noqa: BLE001 - the task's failure goes back to its caller
            log.exception("task failed in %s worker %d", family, os.getpid())
            outcome = ("error", TransformError(f"The {family} transformer failed on this granule; see its log."))
        try:
            connection.send(outcome)
        except Exception as error:  # noqa: BLE001 - e.g. an exception that does not pickle
            connection.send(("error", TransformError(f"The {family} transformer could not return its result: {error}")))


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    connection: multiprocessing.connection.Connection

    def kill(self) -> None:
        if self.process.is_alive():
            os.kill(self.process.pid or 0, signal.SIGKILL)
        self.process.join(5)
        self.connection.close()

    def rss_bytes(self) -> int:
        try:
            with open(f"/proc/{self.process.pid}/statm") as statm:
                return int(statm.read().split()[1]) * PAGE_BYTES
        except (OSError, ValueError, IndexError):
            return 0


@dataclass
class WorkerPool:
    """`size` workers and at most `max_queued` tasks waiting for one (beyond: a 429)."""

    name: str
    family: str
    kind: str  # light or heavy: the metrics' pool label
    setup: Callable[[], Any]
    size: int
    scratch_root: Path
    max_queued: int = 64
    memory_limit_bytes: int = 4 * 1024**3
    gdal_cache_bytes: int = 256 * 1024**2
    _idle: asyncio.Queue[_Worker] = field(init=False)
    _waiting: int = field(init=False, default=0)
    _all: set[int] = field(init=False, default_factory=set)
    _running: set[int] = field(init=False, default_factory=set)
    _receivers: concurrent.futures.ThreadPoolExecutor = field(init=False)
    _closed: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self._idle = asyncio.Queue()
        self._receivers = concurrent.futures.ThreadPoolExecutor(self.size, thread_name_prefix=f"{self.name}-results")

    async def start(self) -> None:
        workers = await asyncio.gather(*(asyncio.to_thread(self._spawn) for _ in range(self.size)))
        for worker in workers:
            self._idle.put_nowait(worker)
        self._report()

    def _report(self) -> None:
        labels = (self.family, self.kind)
        TRANSFORMER_WORKERS.labels(*labels).set(len(self._all))
        TRANSFORMER_WORKERS_BUSY.labels(*labels).set(len(self._running))
        TRANSFORMER_QUEUED.labels(*labels).set(self._waiting)

    def _spawn(self) -> _Worker:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_worker_main, args=(theirs, self.family, self.setup, self.gdal_cache_bytes),
            name=f"{self.name}-worker", daemon=True,
        )
        process.start()
        theirs.close()
        self._all.add(process.pid or 0)
        return _Worker(process, ours)

    @property
    def pids(self) -> set[int]:
        return set(self._all)

    @property
    def waiting(self) -> int:
        """Tasks queued for a worker."""
        return self._waiting

    @property
    def busy(self) -> set[int]:
        """The workers running a task now, by pid."""
        return set(self._running)

    async def run(self, task: Callable[[], T], what: str, *, keep_scratch: bool = False) -> T:
        """Run task in a worker; `what` names the work in errors (e.g. "granule G1").

        The task's scratch folder (current().scratch) is removed when the task ends, unless
        keep_scratch: then the caller removes it once done with the files in it (an output to stream).
        """
        if self._closed:
            raise ServiceUnavailableError("This transformer is stopping; try again shortly.")
        if self._waiting >= self.max_queued and self._idle.empty():
            TRANSFORMER_REFUSED.labels(self.family, "queue_full").inc()
            raise TooManyRequestsError(
                f"The {self.family} transformer has {self._waiting} requests waiting already; try again shortly.",
                retry_after=2.0,
            )
        self._waiting += 1
        self._report()
        try:
            worker = await self._idle.get()
        finally:
            self._waiting -= 1
        scratch = self.scratch_root / f"task-{uuid.uuid4().hex}"
        self._running.add(worker.process.pid or 0)
        self._report()
        try:
            worker.connection.send((str(scratch), task))
            result = await self._result(worker, what)
        except _Lost as lost:  # too much memory, or died
            self._retire(worker, scratch)
            raise lost.error from None
        except GeomeshError:  # the task's own failure: the worker carries on
            shutil.rmtree(scratch, ignore_errors=True)
            self._idle.put_nowait(worker)
            raise
        except BaseException:  # cancelled (its caller left), or broken: the worker is killed mid-task
            self._retire(worker, scratch)
            raise
        finally:
            self._running.discard(worker.process.pid or 0)
            self._report()
        if not keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        self._idle.put_nowait(worker)
        return result

    def _retire(self, worker: _Worker, scratch: Path) -> None:
        """Kill a worker whatever it is doing, remove its task's files, and start another."""
        worker.kill()
        self._all.discard(worker.process.pid or 0)
        shutil.rmtree(scratch, ignore_errors=True)
        if not self._closed:
            asyncio.get_running_loop().create_task(self._replace())

    async def _replace(self) -> None:
        try:
            self._idle.put_nowait(await asyncio.to_thread(self._spawn))
            self._report()
        except Exception:  # noqa: BLE001 - logged; the pool runs one worker short until restarted
            log.exception("%s: could not start a replacement worker", self.name)

    async def _result(self, worker: _Worker, what: str) -> Any:
        loop = asyncio.get_running_loop()
        receiving = loop.run_in_executor(self._receivers, _receive, worker.connection)
        started = time.monotonic()
        while True:
            done, _ = await asyncio.wait({receiving}, timeout=POLL_SECONDS)
            if done:
                break
            rss = worker.rss_bytes()
            if rss > self.memory_limit_bytes:
                log.warning("%s: %s needed %d MiB after %.1f s; worker killed", self.name, what, rss >> 20, time.monotonic() - started)
                raise _Lost(PayloadTooLargeError(
                    f"Processing {what} needed more than the {self.memory_limit_bytes >> 20} MiB a transformer "
                    "may use for one request: ask for a smaller area, fewer variables or a coarser grid."
                ))
        status, value = receiving.result()
        if status == "died":
            raise _Lost(ServiceUnavailableError(f"The transformer's worker stopped while processing {what}; try again."))
        if status == "error":
            raise value
        return value

    async def close(self) -> None:
        """Stop every worker (running tasks are killed: their callers get an error)."""
        self._closed = True
        while not self._idle.empty():
            worker = self._idle.get_nowait()
            worker.connection.close()  # the worker's recv() ends: it exits
            await asyncio.to_thread(worker.process.join, 5)
            if worker.process.is_alive():
                worker.kill()
        for pid in list(self._all):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._receivers.shutdown(wait=False, cancel_futures=True)


def _receive(connection: multiprocessing.connection.Connection) -> tuple[str, Any]:
    try:
        received: tuple[str, Any] = connection.recv()
        return received
    except (EOFError, OSError):
        return ("died", None)


class _Lost(Exception):
    """The task's worker is gone or must go (it is replaced); `error` is what the caller gets."""

    def __init__(self, error: GeomeshError) -> None:
        super().__init__(error.message)
        self.error = error
