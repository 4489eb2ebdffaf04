"""Dynamic batching: concurrent requests for one model answered by one forward.

Each model version has a Batcher. A request's examples join its queue; one drain
task at a time takes what is waiting (up to `max_size` examples) and runs the
forward in a thread, so the event loop keeps reading requests meanwhile. The drain
task waits for more, at most `budget_s`, only while other predict requests have
arrived in this process and are still on their way to a queue: a lone request
never waits.
"""

import asyncio
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

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
            while self._queue:
                batch = await self._take_batch()
                await self._answer(batch)
        finally:
            self._drain_task = None

    async def _take_batch(self) -> list[_Pending]:
        batch = [self._queue.popleft()]
        size = len(batch[0].examples)
        deadline = time.perf_counter() + self.budget_s
        while size < self.max_size:
            if self._queue:
                if size + len(self._queue[0].examples) > self.max_size:
                    break
                batch.append(self._queue.popleft())
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
        started = time.perf_counter()
        for pending in batch:
            self._queue_wait.observe(started - pending.queued_at)
        self._sizes.observe(size)
        return batch

    async def _answer(self, batch: list[_Pending]) -> None:
        try:
            answers: Sequence[list[Ranked] | Exception] = await asyncio.to_thread(
                self.predictor.predict_requests,
                [pending.examples for pending in batch],
                [pending.top_k for pending in batch],
            )
        except Exception as exc:  # a bug, not bad input: every request of the batch hears of it
            answers = [exc] * len(batch)
        for pending, answer in zip(batch, answers, strict=True):
            if pending.future.done():  # the client went away
                continue
            if isinstance(answer, Exception):
                pending.future.set_exception(answer)
            else:
                pending.future.set_result(answer)
