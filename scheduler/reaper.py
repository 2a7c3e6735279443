"""The reaper: deletes the staged outputs of jobs past their data expiration.

Every scheduler runs one; a lease in the job store lets only one act per round, and another takes
over once a holder stops renewing it. Outputs in a user's own bucket (destinationUrl) are theirs
and never touched.
"""

from __future__ import annotations

import asyncio
import logging
import random
from contextlib import suppress
from datetime import timedelta

from scheduler.jobs.store import JobStore
from scheduler.staging import Staging

log = logging.getLogger(__name__)

LEASE_NAME = "reaper"
BATCH = 100  # jobs per round at most; the next round takes the rest


class Reaper:
    def __init__(self, store: JobStore, staging: Staging, owner: str, interval_seconds: float) -> None:
        self.store, self.staging, self.owner = store, staging, owner
        self.interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def reap(self) -> int:
        """One round: if this scheduler holds the lease, delete expired outputs; the jobs reaped."""
        if not await self.store.take_lease(LEASE_NAME, self.owner, timedelta(seconds=self.interval * 1.5)):
            return 0
        reaped = 0
        for job_id in await self.store.expired_jobs(BATCH):
            files = await self.staging.delete_job(job_id)
            await self.store.outputs_deleted(job_id)
            log.info("job %s: its %d staged outputs expired and were deleted", job_id, files)
            reaped += 1
        return reaped

    async def _loop(self) -> None:
        # Schedulers started together do not all knock at once.
        await asyncio.sleep(random.uniform(0, min(self.interval, 10.0)))
        while True:
            try:
                await self.reap()
            except Exception:  # the store or staging may be restarting: the next round tries again
                log.exception("deleting expired outputs failed")
            await asyncio.sleep(self.interval)
