"""Model versions (one per succeeded job) and the aliases of each model name."""

from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.store.artefacts import ArtefactCorrupt, ArtefactStore
from app.store.pages import page
from app.store.tables import (
    AliasMove,
    Dataset,
    Job,
    ModelAlias,
    ModelVersion,
    RegistryGeneration,
    is_id,
    utcnow,
)

LATEST = "latest"
PRODUCTION = "production"
# The PostgreSQL channel each change to the registry is announced on, when it commits.
REGISTRY_CHANNEL = "trainserve_registry"
# The registry's change count (see RegistryGeneration).
GENERATION = select(RegistryGeneration.generation).where(RegistryGeneration.id == 1)


class ModelFileCorrupt(RuntimeError):
    """A checkpoint no longer matches the sha256 recorded with its version."""


class VersionAliased(Exception):
    """A model version an alias points at cannot be deleted."""

    def __init__(self, aliases: list[str]):
        super().__init__(f"aliases point at this version: {', '.join(aliases)}")
        self.aliases = aliases


def add_version(session: Session, job: Job, model: ModelVersion) -> None:
    """Stage a succeeded job's model with its spec and data hash, and move its `latest`;
    the caller commits, with the job's end."""
    model.spec = job.spec
    model.data_sha256 = session.scalar(select(Dataset.sha256).where(Dataset.id == job.dataset_id))
    session.add(model)
    session.flush()
    stage_alias_move(session, model.name, LATEST, model.id, action="job_succeeded")


def checkpoint_of(version, store: ArtefactStore) -> Path:
    """A local file of a version's checkpoint (a row, or anything with its id,
    checkpoint_path and sha256), once its bytes are checked against the sha256 recorded
    when training wrote it."""
    try:
        return store.read(version.checkpoint_path, version.sha256)
    except ArtefactCorrupt as exc:
        raise ModelFileCorrupt(f"model {version.id}: checkpoint does not match its sha256") from exc


def list_models(session: Session, limit: int, cursor: str | None, name: str | None, *filters):
    """A page of versions (of one name if given) that pass the filters."""
    if name:
        filters = (*filters, ModelVersion.name == name)
    return page(session, ModelVersion, limit, cursor, *filters)


def find_model(session: Session, model_or_job_id: str) -> ModelVersion | None:
    """A model by its own id or by the id of the job that trained it."""
    if not is_id(model_or_job_id):
        return None
    return session.scalar(
        select(ModelVersion).where(
            (ModelVersion.id == model_or_job_id) | (ModelVersion.job_id == model_or_job_id)
        )
    )


def delete_model(session: Session, model: ModelVersion) -> None:
    """Raises VersionAliased while an alias points at the version."""
    remove_version(session, model)
    session.commit()


def remove_version(session: Session, model: ModelVersion) -> None:
    """Stage the version's deletion; the caller commits. Raises VersionAliased while an
    alias points at it."""
    aliases = [a.alias for a in aliases_of_versions(session, [model.id]).get(model.id, [])]
    if aliases:
        raise VersionAliased(aliases)
    session.delete(model)
    count_registry_change(session)


def version_ids(session: Session) -> dict[str, str]:
    """Version id and job id -> version id, for every model version."""
    found = {}
    for version_id, job_id in session.execute(select(ModelVersion.id, ModelVersion.job_id)):
        found[version_id] = found[job_id] = version_id
    return found


def names_per_task(session: Session) -> dict[str, list[str]]:
    """Task -> its model names, the one with the newest version first."""
    newest = func.max(ModelVersion.created_at)
    rows = session.execute(
        select(ModelVersion.task, ModelVersion.name)
        .group_by(ModelVersion.task, ModelVersion.name)
        .order_by(newest.desc(), ModelVersion.name)
    )
    names: dict[str, list[str]] = {}
    for task, name in rows:
        names.setdefault(task, []).append(name)
    return names


def version_names(session: Session) -> dict[str, str]:
    """Version id -> its model name, for every version."""
    return dict(session.execute(select(ModelVersion.id, ModelVersion.name)).all())


# ---- aliases -----------------------------------------------------------------------------


def all_aliases(session: Session) -> dict[tuple[str, str], str]:
    """(name, alias) -> version id, for every alias."""
    rows = session.execute(select(ModelAlias.name, ModelAlias.alias, ModelAlias.version_id))
    return {(name, alias): version_id for name, alias, version_id in rows}


def aliases_of_name(session: Session, name: str) -> list[ModelAlias]:
    return list(
        session.scalars(
            select(ModelAlias).where(ModelAlias.name == name).order_by(ModelAlias.alias)
        )
    )


def aliases_of_versions(session: Session, version_ids: list[str]) -> dict[str, list[ModelAlias]]:
    found: dict[str, list[ModelAlias]] = {}
    for alias in session.scalars(
        select(ModelAlias).where(ModelAlias.version_id.in_(version_ids)).order_by(ModelAlias.alias)
    ):
        found.setdefault(alias.version_id, []).append(alias)
    return found


def move_alias(
    session: Session, name: str, alias: str, version_id: str, *, action: str, moved_by: str | None
) -> AliasMove:
    move = stage_alias_move(session, name, alias, version_id, action=action, moved_by=moved_by)
    session.commit()
    return move


def stage_alias_move(
    session: Session,
    name: str,
    alias: str,
    version_id: str,
    *,
    action: str,
    moved_by: str | None = None,
) -> AliasMove:
    current = session.get(ModelAlias, (name, alias), with_for_update=True)
    from_version_id = current.version_id if current else None
    if current is None:
        session.add(ModelAlias(name=name, alias=alias, version_id=version_id))
    else:
        current.version_id, current.moved_at = version_id, utcnow()
    move = AliasMove(
        name=name,
        alias=alias,
        from_version_id=from_version_id,
        to_version_id=version_id,
        action=action,
        moved_by=moved_by,
    )
    session.add(move)
    count_registry_change(session)
    return move


def count_registry_change(session: Session) -> None:
    """Bump the registry's generation in the change's transaction, and on PostgreSQL
    announce it to every listening API process: PostgreSQL delivers it when the change
    commits, never before and never for a change rolled back. Called after the change's
    own rows are locked, so concurrent changes meet on the counter's row in one order."""
    generation = session.scalar(
        update(RegistryGeneration)
        .where(RegistryGeneration.id == 1)
        .values(generation=RegistryGeneration.generation + 1)
        .returning(RegistryGeneration.generation)
        .execution_options(synchronize_session=False)
    )
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_notify(REGISTRY_CHANNEL, str(generation))))


def alias_moves(session: Session, name: str, alias: str, limit: int) -> list[AliasMove]:
    """The alias's moves, newest first."""
    return list(
        session.scalars(
            select(AliasMove)
            .where(AliasMove.name == name, AliasMove.alias == alias)
            .order_by(AliasMove.id.desc())
            .limit(limit)
        )
    )
