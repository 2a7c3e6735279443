"""Worker processes: a task whose caller goes is stopped at once (its worker killed, its files removed),
one that grows too big is stopped with a 413, one whose worker dies fails alone, and queues are bounded."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from geomesh.errors import (
    PayloadTooLargeError,
    RequestValidationError,
    ServiceUnavailableError,
    TooManyRequestsError,
    TransformError,
)
from transformers.workers import WorkerPool, current


def nothing() -> None:
    return None


def pid() -> int:
    return os.getpid()


def stay(seconds: float) -> str:
    """Write a file into the task's scratch folder, then keep working."""
    (current().scratch / "partial.tif").write_bytes(b"x" * 1000)
    time.sleep(seconds)
    return "done"


def grow(megabytes: int) -> None:
    hoard = bytearray(megabytes * 1024 * 1024)
    for index in range(0, len(hoard), 4096):  # touched, so it is resident
        hoard[index] = 1
    time.sleep(30)


def refuse() -> None:
    raise RequestValidationError("the granule has no variable purple_var")


def break_unexpectedly() -> None:
    raise KeyError("an internal detail")


def die() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


@pytest_asyncio.fixture(loop_scope="session")
async def pool(tmp_path: Path) -> AsyncIterator[WorkerPool]:
    workers = WorkerPool("test", "gdal", "heavy", nothing, 1, tmp_path, max_queued=1, memory_limit_bytes=300 * 1024**2)
    await workers.start()
    yield workers
    await workers.close()


async def _until(condition: object, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def _alive(process_id: int) -> bool:
    try:
        os.kill(process_id, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{process_id}/stat") as stat:
        return stat.read().split()[2] != "Z"


async def test_a_cancelled_task_is_stopped_within_a_second_and_its_files_removed(pool: WorkerPool, tmp_path: Path) -> None:
    first = await pool.run(pid, "a pid")
    task = asyncio.create_task(pool.run(lambda_free_stay, "a long task"))
    await _until(lambda: any(tmp_path.glob("task-*/partial.tif")))
    task.cancel()
    cancelled_at = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _until(lambda: not _alive(first))
    assert time.monotonic() - cancelled_at < 1.0
    assert list(tmp_path.glob("task-*")) == []
    replacement = await pool.run(pid, "a pid")  # a fresh worker took its place
    assert replacement != first and _alive(replacement)


def lambda_free_stay() -> str:
    return stay(30)


async def test_a_task_that_grows_past_the_limit_is_stopped_with_a_413(pool: WorkerPool) -> None:
    first = await pool.run(pid, "a pid")
    started = time.monotonic()
    with pytest.raises(PayloadTooLargeError, match="needed more than the 300 MiB"):
        await pool.run(grow_600, "granule G1")
    assert time.monotonic() - started < 5
    assert not _alive(first) and await pool.run(pid, "a pid") != first


def grow_600() -> None:
    grow(600)


async def test_a_worker_that_dies_fails_only_its_own_task(pool: WorkerPool) -> None:
    with pytest.raises(ServiceUnavailableError, match="stopped while processing granule G2"):
        await pool.run(die, "granule G2")
    assert await pool.run(pid, "a pid") > 0


async def test_a_tasks_own_errors_come_back_and_the_worker_carries_on(pool: WorkerPool) -> None:
    before = await pool.run(pid, "a pid")
    with pytest.raises(RequestValidationError, match="purple_var"):
        await pool.run(refuse, "granule G3")
    with pytest.raises(TransformError) as caught:
        await pool.run(break_unexpectedly, "granule G4")
    assert "internal detail" not in caught.value.message and "KeyError" not in caught.value.message
    assert await pool.run(pid, "a pid") == before


async def test_beyond_the_queue_requests_get_a_429(pool: WorkerPool) -> None:
    running = asyncio.create_task(pool.run(lambda_free_stay, "the first"))
    await _until(lambda: len(pool.busy) == 1)
    queued = asyncio.create_task(pool.run(pid, "the second"))
    await _until(lambda: pool.waiting == 1)
    with pytest.raises(TooManyRequestsError) as refused:
        await pool.run(pid, "the third")
    assert refused.value.retry_after == 2.0
    running.cancel()
    assert await queued > 0  # the queued one runs once the worker is free (here: replaced)


async def test_a_full_scratch_space_is_a_503_before_any_work(tmp_path: Path) -> None:
    from geomesh.settings import TransformerSettings
    from transformers.gdal.service import GdalTransformer

    transformer = GdalTransformer(TransformerSettings(port=0, scratch_dir=tmp_path, max_scratch_bytes=1000, workers=1, light_workers=1))
    try:
        (transformer.scratch.path / "task-x").mkdir()
        (transformer.scratch.path / "task-x" / "output.tif").write_bytes(b"x" * 2000)  # an output still streaming
        with pytest.raises(ServiceUnavailableError, match="scratch space is full") as full:
            await transformer.run(nothing_task, "granule G1", light=True)
        assert full.value.retry_after == 5
    finally:
        await transformer.close()


def nothing_task(budget: object) -> None:
    return None
