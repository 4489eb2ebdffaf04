"""Dynamic batching: concurrent requests for one model answered by one forward.

Each model version has a Batcher. A request's examples join its queue; one drain
task at a time takes what is waiting (up to `max_size` examples) and runs the
forward in a thread, so the event loop keeps reading requests meanwhile. The drain
task waits for more, at most `budget_s`, only while other predict requests have
arrived in this process and are still on their way to a queue: a lone request
never waits. A request of more than `max_size` examples is answered `max_size` at a
time, and goes to the back of the queue after each batch: the requests behind it wait
for one batch, not for all of it.
"""

import asyncio
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from prometheus_client import Histogram

from models.predictor import Predictor, Ranked


class Arrivals:
    """Predict requests in this process that have not reached a queue yet."""

    def __init__(self):
        self.count = 0

    def arrive(self) -> None:
        self.count += 1

    def leave(self) -> None:
        """The request reached its queue, or will not."""
        self.count -= 1

    @contextmanager
    def expect(self) -> Iterator[None]:
        self.arrive()
        try:
            yield
        finally:
            self.leave()


@dataclass
class _Pending:
    examples: list
    top_k: int
    future: asyncio.Future
    queued_at: float
    taken: int = 0  # examples handed to a batch so far
    answers: list = field(default_factory=list)  # of the slices answered so far, in order

    @property
    def left(self) -> int:
        return len(self.examples) - self.taken


@dataclass(frozen=True)
class _Slice:
    """Examples start:stop of one request: the part of it one batch answers."""

    pending: _Pending
    start: int
    stop: int

    @property
    def examples(self) -> list:
        return self.pending.examples[self.start : self.stop]


@dataclass
class BatchMetrics:
    sizes: Histogram
    queue_wait: Histogram


class Batcher:
    def __init__(
        self,
        predictor: Predictor,
        *,
        max_size: int,
        budget_s: float,
        arrivals: Arrivals,
        metrics: BatchMetrics,
        label: str,
    ):
        self.predictor = predictor
        self.max_size, self.budget_s, self.arrivals = max_size, budget_s, arrivals
        self._sizes = metrics.sizes.labels(model=label)
        self._queue_wait = metrics.queue_wait.labels(model=label)
        self._queue: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        self._drain_task: asyncio.Task | None = None

    def submit(self, examples: list, top_k: int) -> asyncio.Future[list[Ranked]]:
        """Queue one request's examples; the future raises DatasetError for bad input."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(examples, top_k, future, time.perf_counter()))
        self._arrived.set()
        if self._drain_task is None:
            self._drain_task = asyncio.create_task(self._drain())
        return future

    async def _drain(self) -> None:
        try:
            while self._skip_answered():
                batch = await self._take_batch()
                await self._answer(batch)
        finally:
            self._drain_task = None

    def _skip_answered(self) -> bool:
        """Drop the requests at the head that are answered already (the client went away, or
        a slice of theirs failed); whether any request waits."""
        while self._queue and self._queue[0].future.done():
            self._queue.popleft()
        return bool(self._queue)

    async def _take_batch(self) -> list[_Slice]:
        batch = [self._take(self._queue[0], self.max_size)]
        size = len(batch[0].examples)
        deadline = time.perf_counter() + self.budget_s
        while size < self.max_size:
            if self._queue:
                if self._queue[0].left > self.max_size - size:
                    break  # whole requests only, after the first
                batch.append(self._take(self._queue[0], self._queue[0].left))
                size += len(batch[-1].examples)
                continue
            remaining = deadline - time.perf_counter()
            if self.arrivals.count == 0 or remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        self._sizes.observe(size)
        return batch

    def _take(self, pending: _Pending, count: int) -> _Slice:
        """The next `count` examples of the request at the head of the queue; the request
        leaves the queue when none are left, else goes to its back."""
        if pending.taken == 0:
            self._queue_wait.observe(time.perf_counter() - pending.queued_at)
        part = _Slice(pending, pending.taken, pending.taken + count)
        pending.taken += count
        self._queue.popleft()
        if pending.left:
            self._queue.append(pending)
        return part

    async def _answer(self, batch: list[_Slice]) -> None:
        try:
            answers: Sequence[list[Ranked] | Exception] = await asyncio.to_thread(
                self.predictor.predict_requests,
                [part.examples for part in batch],
                [part.pending.top_k for part in batch],
                [part.start for part in batch],
            )
        except Exception as exc:  # a bug, not bad input: every request of the batch hears of it
            answers = [exc] * len(batch)
        for part, answer in zip(batch, answers, strict=True):
            _answered(part.pending, answer)


def _answered(pending: _Pending, answer: list[Ranked] | Exception) -> None:
    """One slice's answer: the request's future is done with its last slice, or its first
    error."""
    if pending.future.done():  # the client went away, or an earlier slice failed
        return
    if isinstance(answer, Exception):
        pending.future.set_exception(answer)
        return
    pending.answers += answer
    if len(pending.answers) == len(pending.examples):
        pending.future.set_result(pending.answers)
