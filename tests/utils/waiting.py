"""Waiting for a state: poll a condition until it holds, never a fixed sleep."""

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T | None],
    timeout: float = 60.0,
    what: str | Callable[[], str] = "the condition",
    interval: float = 0.05,
) -> T:
    """The condition's first truthy value, polled every `interval` seconds.

    `what` names the awaited state in the failure message; a function is called only on
    failure, so the message can carry what was seen last (a job's state, a process's log).
    """
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g} s waiting for {described}")
        time.sleep(interval)
    return value
