"""Harmony's job states, the moves between them, and the message each state shows by default."""

from __future__ import annotations

from enum import StrEnum

from geomesh.errors import ConflictError


class JobStatus(StrEnum):
    RUNNING = "running"
    RUNNING_WITH_ERRORS = "running_with_errors"
    PREVIEWING = "previewing"
    PAUSED = "paused"
    SUCCESSFUL = "successful"
    COMPLETE_WITH_ERRORS = "complete_with_errors"
    FAILED = "failed"
    CANCELED = "canceled"


TERMINAL = frozenset({JobStatus.SUCCESSFUL, JobStatus.COMPLETE_WITH_ERRORS, JobStatus.FAILED, JobStatus.CANCELED})
# Work items are leased only for jobs in these states.
ACTIVE = frozenset({JobStatus.RUNNING, JobStatus.RUNNING_WITH_ERRORS, JobStatus.PREVIEWING})

_MOVES: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PREVIEWING: frozenset({JobStatus.RUNNING, JobStatus.PAUSED, JobStatus.CANCELED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.RUNNING_WITH_ERRORS, JobStatus.SUCCESSFUL, JobStatus.COMPLETE_WITH_ERRORS,
            JobStatus.FAILED, JobStatus.CANCELED, JobStatus.PAUSED,
        }
    ),
    JobStatus.RUNNING_WITH_ERRORS: frozenset(
        {JobStatus.COMPLETE_WITH_ERRORS, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.PAUSED}
    ),
    JobStatus.PAUSED: frozenset(
        {JobStatus.RUNNING, JobStatus.RUNNING_WITH_ERRORS, JobStatus.CANCELED, JobStatus.FAILED}
    ),
}

DEFAULT_MESSAGES = {
    JobStatus.RUNNING: "The job is being processed",
    JobStatus.RUNNING_WITH_ERRORS: "The job is being processed, but some items have failed",
    JobStatus.PREVIEWING: "The job is generating a preview before auto-pausing",
    JobStatus.PAUSED: "The job is paused and may be resumed using the provided link",
    JobStatus.SUCCESSFUL: "The job has completed successfully",
    JobStatus.COMPLETE_WITH_ERRORS: "The job has completed with errors. See the errors field for more details",
    JobStatus.FAILED: "The job failed with an unknown error",
    JobStatus.CANCELED: "Canceled by user.",
}


def check_move(current: JobStatus, new: JobStatus) -> None:
    """Raise a 409 unless Harmony's state machine allows current -> new."""
    if new not in _MOVES.get(current, frozenset()):
        raise ConflictError(f"Job status cannot be updated from {current.value} to {new.value}.")
