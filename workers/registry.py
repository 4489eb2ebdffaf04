"""The worker's row in the workers table: renewed every heartbeat by the worker's parent
process, removed when it stops. GET /workers lists the rows; a queue none of them serves
is why a job waits."""

import logging

from app.config import Settings
from app.periodic import Periodic
from app.store.db import get_session_factory
from app.store.outage import DATABASE_UNREACHABLE, OutageNotice, first_line
from app.store.workers import forget_worker, report_worker
from workers.gpus import visible_gpus

log = logging.getLogger("trainserve.worker")


class WorkerRegistry:
    def __init__(self, name: str, queues: list[str], settings: Settings):
        self.name, self.queues = name, queues
        self.gpus = visible_gpus()
        self.device = "cuda" if self.gpus else "cpu"
        self._beats = Periodic(self.report, settings.heartbeat_seconds, name="worker-registry")
        self._outage = OutageNotice(log, f"worker {name}: its row of GET /workers")

    def start(self) -> None:
        self.report()
        self._beats.start()
        log.info(
            "worker %s serves %s on %s (%d GPU(s))",
            self.name,
            ", ".join(self.queues),
            self.device,
            len(self.gpus),
        )

    def report(self) -> None:
        try:
            with get_session_factory()() as session:
                report_worker(session, self.name, self.queues, self.device, self.gpus)
        except DATABASE_UNREACHABLE as exc:  # the next beat tries again
            self._outage.failed(exc)
        else:
            self._outage.recovered()

    def stop(self) -> None:
        self._beats.stop()
        try:
            with get_session_factory()() as session:
                forget_worker(session, self.name)
        except DATABASE_UNREACHABLE as exc:
            log.warning("worker %s: row not removed: %s", self.name, first_line(exc))
