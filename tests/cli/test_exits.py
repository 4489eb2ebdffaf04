"""How a job's end maps to `jobs wait`'s and `jobs follow`'s exit code, and docs/cli.md
lists each code."""

import re

import pytest

from tests.conftest import PROJECT
from trainserve_cli.exits import ExitCode, exit_code_of

CODE_ROW = re.compile(r"^\| `(\d+)` \|", re.M)


@pytest.mark.parametrize(
    ("status", "end_reason", "code"),
    [
        ("succeeded", "completed", 0),
        ("succeeded", "early_stopped", 0),
        ("succeeded", "time_limit", 0),  # the best epoch so far is a model all the same
        ("failed", "invalid", 4),
        ("failed", "attempts_exhausted", 5),
        ("failed", None, 5),  # a reason this client does not know: not its spec's fault
        ("cancelled", "cancelled", 6),
        ("queued", None, 7),
        ("running", None, 7),
        ("cancelling", None, 7),
    ],
)
def test_a_job_end_has_its_exit_code(status, end_reason, code):
    assert exit_code_of({"status": status, "end_reason": end_reason}) == code


def test_the_final_status_event_maps_like_the_job():
    # `follow --json` takes the code from the last event's data, which has no other fields.
    assert exit_code_of({"status": "failed", "attempt": 1, "end_reason": "invalid"}) == 4


def test_every_exit_code_is_distinct_and_documented():
    assert len(set(ExitCode)) == len(ExitCode.__members__)
    documented = {int(code) for code in CODE_ROW.findall((PROJECT / "docs" / "cli.md").read_text())}
    assert documented == {int(code) for code in ExitCode}
