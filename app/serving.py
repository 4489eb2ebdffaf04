"""Which loaded model version answers each `model` reference, kept in step with the registry.

A reference is a version id (or job id), `name@alias`, a bare `name` (its
`production` alias where set, else `latest`), or nothing (the default name of the
task: the name of its newest version). Every API process polls the aliases from
the database, so an alias moved through any process is served by all of them.

Hot swap: when a reference's target changes, the new version is loaded in a
background thread while the old one goes on answering; then the reference is
switched in one assignment on the event loop, and the old version is dropped
unless another reference still serves it. All bookkeeping runs on the event loop;
threads only read files and build networks.
"""

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from app.batching import Arrivals, Batcher
from app.config import Settings
from app.metrics import Metrics
from app.store.db import get_session_factory
from app.store.tables import ModelVersion
from app.store.versions import (
    LATEST,
    PRODUCTION,
    all_aliases,
    checkpoint_of,
    find_model,
    newest_name_per_task,
    version_ids,
)
from models.files import load_plain
from models.predictor import Predictor

log = logging.getLogger("trainserve.serving")


class UnknownModel(LookupError):
    pass


@dataclass(frozen=True)
class VersionInfo:
    """What serving needs of a model_versions row, detached from any session."""

    id: str
    job_id: str
    name: str
    task: str
    checkpoint_path: str
    sha256: str

    @classmethod
    def of(cls, row: ModelVersion) -> "VersionInfo":
        return cls(row.id, row.job_id, row.name, row.task, row.checkpoint_path, row.sha256)


@dataclass
class Served:
    version: VersionInfo
    batcher: Batcher


@dataclass(frozen=True)
class Ref:
    """A parsed `model` reference. kind: task (the default), name, alias or id."""

    kind: str
    value: str
    alias: str | None = None


@dataclass(frozen=True)
class RegistrySnapshot:
    aliases: dict[tuple[str, str], str]  # (name, alias) -> version id
    default_names: dict[str, str]  # task -> the name of its newest version
    versions: dict[str, str]  # version id or job id -> version id, for every version

    @property
    def names(self) -> set[str]:
        return {name for name, _ in self.aliases}

    def target(self, ref: Ref) -> str | None:
        """The version id a reference points at now; None if it points nowhere."""
        if ref.kind == "id":
            return self.versions.get(ref.value)
        if ref.kind == "alias":
            if ref.alias is None:
                raise ValueError(f"an alias reference without its alias: {ref!r}")
            return self.aliases.get((ref.value, ref.alias))
        name = self.default_names.get(ref.value) if ref.kind == "task" else ref.value
        if name is None:  # a task with no version yet
            return None
        return self.aliases.get((name, PRODUCTION)) or self.aliases.get((name, LATEST))


def read_snapshot() -> RegistrySnapshot:
    with get_session_factory()() as session:
        return RegistrySnapshot(
            aliases=all_aliases(session),
            default_names=newest_name_per_task(session),
            versions=version_ids(session),
        )


def read_version(version_id: str) -> VersionInfo | None:
    with get_session_factory()() as session:
        row = find_model(session, version_id)
        return VersionInfo.of(row) if row else None


def load_predictor(version: VersionInfo, runtime: str) -> Predictor:
    return Predictor(load_plain(checkpoint_of(version)), runtime)


class PredictorCache:
    """Loaded versions, least recently used dropped first; versions in service are kept."""

    def __init__(self, size: int):
        self.size = size
        self._served: OrderedDict[str, Served] = OrderedDict()

    def __len__(self) -> int:
        return len(self._served)

    def ids(self) -> set[str]:
        return set(self._served)

    def get(self, version_id: str) -> Served | None:
        served = self._served.get(version_id)
        if served is not None:
            self._served.move_to_end(version_id)
        return served

    def put(self, served: Served, in_service: set[str]) -> None:
        self._served[served.version.id] = served
        for version_id in [v for v in self._served if v not in in_service]:
            if len(self._served) <= self.size:
                break
            del self._served[version_id]

    def discard(self, version_id: str) -> None:
        self._served.pop(version_id, None)


class ModelServer:
    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings, self.metrics = settings, metrics
        self.cache = PredictorCache(settings.model_cache_size)
        self.arrivals = Arrivals()
        metrics.predictions_arriving.set_function(lambda: self.arrivals.count)
        self.snapshot = RegistrySnapshot({}, {}, {})
        self._names: set[str] = set()
        self._serving: dict[Ref, str] = {}  # reference -> the version answering it now
        self._loading: dict[str, asyncio.Future[Served]] = {}
        self._swapping: dict[Ref, str] = {}
        self._broken: set[str] = set()  # versions whose load failed: not retried by the poller
        self._tasks: set[asyncio.Task] = set()

    # ---- keeping in step with the registry -----------------------------------------------

    async def poll(self) -> None:
        """Refresh every `registry_poll_seconds`, until cancelled."""
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # the database may be down for a while; keep serving
                log.warning("registry poll failed: %s", exc)
            await asyncio.sleep(self.settings.registry_poll_seconds)

    async def refresh(self) -> None:
        """Read the aliases now; start loading every new target in the background."""
        self.snapshot = await asyncio.to_thread(read_snapshot)
        self._names = self.snapshot.names
        for version_id in self.cache.ids() - set(self.snapshot.versions):
            self.cache.discard(version_id)  # deleted through this or another process
        refs = set(self._serving) | {Ref("task", task) for task in self.snapshot.default_names}
        for ref in refs:
            target = self.snapshot.target(ref)
            if target and target != self._serving.get(ref) and target not in self._broken:
                self._start_swap(ref, target)

    def ready(self) -> tuple[bool, str]:
        if not self.snapshot.default_names:
            return True, "no model trained yet"
        if len(self.cache):
            return True, f"{len(self.cache)} model(s) loaded"
        return False, "models are loading"

    def _start_swap(self, ref: Ref, target: str) -> None:
        if self._swapping.get(ref) == target:
            return
        self._swapping[ref] = target
        task = asyncio.create_task(self._swap(ref, target))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _swap(self, ref: Ref, target: str) -> None:
        try:
            await self._load(target)
        except Exception as exc:
            self._broken.add(target)
            log.error(
                "model %s for %s: load failed, the old version serves on: %s", target, ref, exc
            )
            return
        finally:
            if self._swapping.get(ref) == target:
                del self._swapping[ref]
        if self.snapshot.target(ref) == target:  # not moved again while loading
            self._switch(ref, target)

    def _switch(self, ref: Ref, target: str) -> None:
        old = self._serving.get(ref)
        self._serving[ref] = target
        if old and old != target and old not in self._serving.values():
            self.cache.discard(old)  # in-flight requests keep it alive until they finish
        log.info("%s %s now served by model %s (was %s)", ref.kind, ref.value, target, old)

    # ---- answering requests --------------------------------------------------------------

    def loaded(self, reference: str | None, task: str) -> Served | None:
        """The version answering a request's `model` if it is loaded now, else None (then
        `resolve` finds and loads it)."""
        ref = self._parse(reference, task)
        if ref.kind == "id":  # ids are not kept in service: they would never leave the cache
            return self.cache.get(self.snapshot.versions.get(ref.value, ""))
        return self.cache.get(self._serving.get(ref, ""))

    async def resolve(self, reference: str | None, task: str) -> Served:
        """The loaded version for a request's `model`. Raises UnknownModel."""
        served = self.loaded(reference, task)
        if served is not None:
            return served
        ref = self._parse(reference, task)
        target = self.snapshot.target(ref)
        if target is None:  # perhaps just trained or moved, and not polled yet
            await self.refresh()
            target = self.snapshot.target(ref)
        if target is None:
            raise UnknownModel(self._unknown(ref))
        served = await self._load(target)
        if ref.kind != "id":
            self._serving.setdefault(ref, target)
        return served

    def _parse(self, reference: str | None, task: str) -> Ref:
        if reference is None:
            return Ref("task", task)
        if "@" in reference:
            name, alias = reference.rsplit("@", 1)
            return Ref("alias", name, alias)
        if reference in self._names:
            return Ref("name", reference)
        return Ref("id", reference)

    @staticmethod
    def _unknown(ref: Ref) -> str:
        if ref.kind == "task":
            return f"no trained {ref.value} model yet: POST /jobs and wait for a job to succeed"
        if ref.kind == "alias":
            return f"model {ref.value!r} has no alias {ref.alias!r}"
        if ref.kind == "name":
            return f"model {ref.value!r} has no production or latest alias"
        return f"model {ref.value!r} is neither a model id, the id of a succeeded job, nor a name"

    async def _load(self, version_id: str) -> Served:
        served = self.cache.get(version_id)
        if served is not None:
            return served
        if version_id not in self._loading:
            self._loading[version_id] = asyncio.ensure_future(self._read_and_load(version_id))
            self._loading[version_id].add_done_callback(
                lambda _: self._loading.pop(version_id, None)
            )
        return await asyncio.shield(self._loading[version_id])

    async def _read_and_load(self, version_id: str) -> Served:
        version = await asyncio.to_thread(read_version, version_id)
        if version is None:
            raise UnknownModel(f"model {version_id!r} was deleted")
        started = time.perf_counter()
        predictor = await asyncio.to_thread(load_predictor, version, self.settings.serving_runtime)
        self.metrics.model_load.labels(model=version.name).observe(time.perf_counter() - started)
        served = Served(
            version,
            Batcher(
                predictor,
                max_size=self.settings.max_batch_size,
                budget_s=self.settings.batch_budget_ms / 1000,
                arrivals=self.arrivals,
                metrics=self.metrics.batch,
                label=version.name,
            ),
        )
        self.cache.put(served, set(self._serving.values()) | {version.id})
        log.info(
            "model %s (%s) loaded in %.2f s, answering through %s",
            version.id,
            version.name,
            time.perf_counter() - started,
            predictor.runtime,
        )
        return served
