"""The worker's row in the workers table: renewed every heartbeat by the worker's parent
process, removed when it stops. GET /workers lists the rows; a queue none of them serves
is why a job waits."""

import logging

from sqlalchemy.exc import OperationalError

from app.config import Settings
from app.periodic import Periodic
from app.store.db import get_session_factory
from app.store.workers import forget_worker, report_worker
from workers.gpus import visible_gpus

log = logging.getLogger("trainserve.worker")


class WorkerRegistry:
    def __init__(self, name: str, queues: list[str], settings: Settings):
        self.name, self.queues = name, queues
        self.gpus = visible_gpus()
        self.device = "cuda" if self.gpus else "cpu"
        self._beats = Periodic(self.report, settings.heartbeat_seconds, name="worker-registry")

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
        except OperationalError as exc:  # the database is down: the next beat tries again
            log.warning("worker %s: heartbeat not stored: %s", self.name, str(exc).splitlines()[0])

    def stop(self) -> None:
        self._beats.stop()
        try:
            with get_session_factory()() as session:
                forget_worker(session, self.name)
        except OperationalError as exc:
            log.warning("worker %s: row not removed: %s", self.name, str(exc).splitlines()[0])
