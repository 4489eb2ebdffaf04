"""The exit codes of `trainserve`: how a command, and a job that `jobs wait` or `jobs follow`
saw end, turned out. docs/cli.md lists them; scripts branch on them."""

from enum import IntEnum
from typing import Any

# A job's statuses that are final (the API's ENDED).
ENDED = ("succeeded", "failed", "cancelled")


class ExitCode(IntEnum):
    OK = 0  # the command worked; for a job: it succeeded (all epochs, early stop or time limit)
    API_ERROR = 1  # the API answered an error (its detail is printed)
    USAGE = 2  # a bad command line (click's own code)
    UNREACHABLE = 3  # no answer from the service (down, wrong URL, connection lost for good)
    JOB_INVALID = 4  # the job failed on its spec or data: resubmitting it fails again
    JOB_FAILED = 5  # the job failed after its attempts were used up by infrastructure failures
    JOB_CANCELLED = 6
    WAIT_TIMED_OUT = 7  # --timeout passed with the job still queued or running


def exit_code_of(job: dict[str, Any]) -> ExitCode:
    """How a job that has ended ended, as an exit code; WAIT_TIMED_OUT for one that has not."""
    status = job["status"]
    if status == "succeeded":
        return ExitCode.OK
    if status == "cancelled":
        return ExitCode.JOB_CANCELLED
    if status == "failed":
        invalid = job.get("end_reason") == "invalid"
        return ExitCode.JOB_INVALID if invalid else ExitCode.JOB_FAILED
    return ExitCode.WAIT_TIMED_OUT
