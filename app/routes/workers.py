"""The workers: what each serves and runs, as its heartbeat last reported."""

from datetime import timedelta

from fastapi import APIRouter

from app.deps import SessionDep, SettingsDep
from app.schemas import WorkerPublic, WorkersPublic
from app.store import workers
from app.store.tables import utcnow

router = APIRouter(prefix="/workers", tags=["workers"])


@router.get("")
def list_workers(*, session: SessionDep, settings: SettingsDep) -> WorkersPublic:
    """Every worker that has reported and not stopped, the most recently heard first: its
    queues, device, GPUs (model and memory), the job it runs and its last heartbeat. One
    that stopped without saying so (killed) stays, `alive: false`, until it is back."""
    seen_after = utcnow() - timedelta(seconds=settings.worker_seen_seconds)
    return WorkersPublic(
        items=[
            WorkerPublic(
                name=worker.name,
                queues=worker.queues,
                device=worker.device,
                gpus=worker.gpus,
                job_id=job_id,
                started_at=worker.started_at,
                heartbeat_at=worker.heartbeat_at,
                alive=worker.heartbeat_at > seen_after,
            )
            for worker, job_id in workers.list_workers(session)
        ]
    )
