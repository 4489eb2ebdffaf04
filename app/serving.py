"""Which loaded model version answers each `model` reference, kept in step with the registry.

A reference is a version id (or job id), `name@alias`, a bare `name` (its
`production` alias where set, else `latest`), or nothing (the default name of the
task: the name of its newest version, of those the request's key may read). A request
acts for a reader, the id of its key, and follows only the names that key may read (its
own and those shared with it; app.store.access): any other is answered as unknown. The
readers of each name are part of the snapshot, so the check costs no query. Every API
process reads the aliases from the database again as soon as its registry watch
(app/registry_watch.py) hears of a change,
and every `registry_poll_seconds` in any case, so an alias moved through any process,
or a job's new version, is served by all of them.

A request answers from the version the registry names for its reference, as last read:
once a process has heard of a move, it no longer answers from the old version. The new
one is loaded in a background thread (one load, however many requests wait for it),
then the reference is switched in one assignment on the event loop, and the old version
is dropped unless another reference still serves it. A load that fails leaves the old
version answering. All bookkeeping runs on the event loop; threads only read the
database and files and build networks.
"""

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from app.batching import Arrivals, Batcher
from app.config import Settings
from app.metrics import Metrics
from app.registry_watch import registry_watch
from app.store.access import name_readers, restricted_to
from app.store.artefacts import get_store
from app.store.db import get_session_factory
from app.store.outage import DATABASE_UNREACHABLE, OutageNotice
from app.store.tables import ApiKey, ModelVersion
from app.store.versions import (
    LATEST,
    PRODUCTION,
    all_aliases,
    checkpoint_of,
    find_model,
    names_per_task,
    version_ids,
    version_names,
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
    task_names: dict[str, list[str]]  # task -> its names, the newest version's first
    versions: dict[str, str]  # version id or job id -> version id, for every version
    version_names: dict[str, str]  # version id -> its name
    readers: dict[str, frozenset[str]]  # name -> the keys, not admin, that may read it

    @property
    def names(self) -> set[str]:
        return {name for name, _ in self.aliases}

    @property
    def default_names(self) -> dict[str, str]:
        """Task -> the name of its newest version: the default of a reader who sees all."""
        return {task: names[0] for task, names in self.task_names.items()}

    def may_read(self, name: str, reader: str | None) -> bool:
        return reader is None or reader in self.readers.get(name, ())

    def readable(self, ref: Ref, reader: str | None) -> Ref | None:
        """The reference as the reader may follow it (a task's default: the newest name it
        may read); None when it names nothing the reader may read."""
        if reader is None:
            return ref
        if ref.kind == "task":
            names = self.task_names.get(ref.value, ())
            name = next((n for n in names if self.may_read(n, reader)), None)
            return None if name is None else Ref("name", name)
        name = self.version_names.get(self.versions.get(ref.value, ""))
        if ref.kind != "id":
            name = ref.value
        return ref if name is not None and self.may_read(name, reader) else None

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
            task_names=names_per_task(session),
            versions=version_ids(session),
            version_names=version_names(session),
            readers=name_readers(session),
        )


def read_version(version_id: str) -> VersionInfo | None:
    with get_session_factory()() as session:
        row = find_model(session, version_id)
        return VersionInfo.of(row) if row else None


def load_predictor(version: VersionInfo, settings: Settings) -> Predictor:
    checkpoint = load_plain(checkpoint_of(version, get_store(settings)))
    return Predictor(checkpoint, settings.serving_runtime, settings.max_predict_image_pixels)


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


class KeptReferences:
    """The model names and aliases each key's requests keep in service, at most `per_key`,
    least recently asked let go first: a key cannot keep every version loaded by asking
    for each by name. (Requests without a key, with authentication off, count as one key.)"""

    def __init__(self, per_key: int):
        self.per_key = per_key
        self._by_key: dict[str | None, OrderedDict[Ref, None]] = {}

    def ask(self, key_id: str | None, ref: Ref) -> Ref | None:
        """The key asked for ref; the reference no key keeps any more, if one is let go."""
        kept = self._by_key.setdefault(key_id, OrderedDict())
        kept[ref] = None
        kept.move_to_end(ref)
        if len(kept) <= self.per_key:
            return None
        let_go, _ = kept.popitem(last=False)
        return None if any(let_go in refs for refs in self._by_key.values()) else let_go


class ModelServer:
    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings, self.metrics = settings, metrics
        self.cache = PredictorCache(settings.model_cache_size)
        self.kept = KeptReferences(settings.max_models_per_key)
        self.arrivals = Arrivals()
        metrics.predictions_arriving.set_function(lambda: self.arrivals.count)
        self.snapshot = RegistrySnapshot({}, {}, {}, {}, {})
        self._names: set[str] = set()
        self._serving: dict[Ref, str] = {}  # reference -> the version answering it now
        self._loading: dict[str, asyncio.Future[Served]] = {}
        self._swapping: dict[Ref, str] = {}
        self._broken: set[str] = set()  # versions whose load failed: not retried by the poller
        self._tasks: set[asyncio.Task] = set()
        self.watch = registry_watch(settings, on_heard=self._heard_of_change)
        self._synced: object = None  # what the watch had heard when the snapshot was read
        self._reads = self._newest_read = 0  # snapshot reads started; the newest one applied
        self._catching_up: asyncio.Future[None] | None = None
        self._registry_outage = OutageNotice(log, "registry reads (what is loaded serves on)")

    # ---- keeping in step with the registry -----------------------------------------------

    async def poll(self) -> None:
        """Refresh every `registry_poll_seconds`, until cancelled: serving keeps in step
        this way when the watch hears nothing."""
        log.info(
            "registry changes %s; the registry is read every %g s in any case",
            self.watch.how,
            self.settings.registry_poll_seconds,
        )
        while True:
            try:
                await self.watch.connect()
                await self.refresh()
            except Exception as exc:  # the database may be down for a while; keep serving
                self._read_failed("registry poll", exc)
            else:
                self._registry_outage.recovered()
            await asyncio.sleep(self.settings.registry_poll_seconds)

    def stop(self) -> None:
        self.watch.close()

    async def refresh(self) -> None:
        """Read the aliases now; start loading every new target in the background."""
        heard = self.watch.heard()  # before the read: a change heard later reads again
        self._reads += 1
        read = self._reads
        snapshot = await asyncio.to_thread(read_snapshot)
        if read < self._newest_read:
            return  # a read started later has answered already
        self._newest_read, self._synced, self.snapshot = read, heard, snapshot
        self._names = self.snapshot.names
        for version_id in self.cache.ids() - set(self.snapshot.versions):
            self.cache.discard(version_id)  # deleted through this or another process
        refs = set(self._serving) | {Ref("task", task) for task in self.snapshot.default_names}
        for ref in refs:
            target = self.snapshot.target(ref)
            if target == self._serving.get(ref):
                self._swapping.pop(ref, None)  # moved back before the other version loaded
            elif target and target not in self._broken:
                self._start_swap(ref, target)

    def behind(self) -> bool:
        """Whether the watch heard of a change to the registry since the snapshot was read."""
        return self.watch.heard() != self._synced

    async def catch_up(self) -> None:
        """Read the registry again if the watch heard of a change since the last read: one
        read at a time, however many requests wait for it."""
        while self.behind():
            if self._catching_up is None:
                self._catching_up = asyncio.ensure_future(self._read_again())
                self._catching_up.add_done_callback(self._caught_up)
            await asyncio.shield(self._catching_up)

    async def _read_again(self) -> None:
        heard = self.watch.heard()
        try:
            await self.refresh()
        except Exception as exc:  # the database went away since: serve what is loaded
            self._synced = heard  # and leave the change to the poll, once it is back
            self._read_failed("registry read after a change", exc)

    def _read_failed(self, what: str, exc: Exception) -> None:
        """An outage: one line as it starts (and ends); anything else, a line each time."""
        if isinstance(exc, DATABASE_UNREACHABLE):
            self._registry_outage.failed(exc)
        else:
            log.warning("%s failed: %s", what, exc)

    def _caught_up(self, _: asyncio.Future) -> None:
        self._catching_up = None

    def _heard_of_change(self) -> None:
        """The watch heard of a change unasked: start loading what it moved now."""
        task = asyncio.ensure_future(self.catch_up())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        kept = ref in self._serving or ref.kind == "task"  # not let go while loading
        if kept and self.snapshot.target(ref) == target:  # nor moved again
            self._switch(ref, target)

    def _switch(self, ref: Ref, target: str) -> None:
        old = self._serving.get(ref)
        if old == target:
            return
        self._serving[ref] = target
        if old and old not in self._serving.values():
            self.cache.discard(old)  # in-flight requests keep it alive until they finish
        log.info(
            "%s %s now served by model %s (was %s)", ref.kind, ref.value, target, old or "none"
        )

    # ---- answering requests --------------------------------------------------------------

    def loaded(self, reference: str | None, task: str, reader: str | None) -> Served | None:
        """The version answering a request's `model` for this reader (a key id; None sees
        every name) if it is loaded and the registry has not changed since it was read, else
        None (then `resolve` reads, finds and loads it, or says it is unknown)."""
        if self.behind():
            return None
        ref = self.snapshot.readable(self._parse(reference, task), reader)
        return None if ref is None else self._loaded(ref)

    async def resolve(self, reference: str | None, task: str, key: ApiKey | None) -> Served:
        """The loaded version for a request's `model`, as the key may read it, asked for by
        it (None: auth is off). Raises UnknownModel."""
        served = await self._resolve(reference, task, restricted_to(key))
        ref = self._parse(reference, task)
        if ref.kind in ("name", "alias"):  # a task's default is kept anyway, an id never
            let_go = self.kept.ask(key.id if key else None, ref)
            if let_go is not None:
                self._let_go(let_go)
        return served

    def name_of(self, reference: str) -> str | None:
        """The model name a reference names (an alias's, a version's), as last read."""
        ref = self._parse(reference, "")
        if ref.kind != "id":
            return ref.value
        return self.snapshot.version_names.get(self.snapshot.versions.get(ref.value, ""))

    def versions_of(self, name: str) -> list[str]:
        """The version ids of a model name, as last read."""
        return [v for v, of in self.snapshot.version_names.items() if of == name]

    def _let_go(self, ref: Ref) -> None:
        """No key keeps the reference in service any more: its version stays in the cache
        only as long as the cache's size allows."""
        self._serving.pop(ref, None)
        self._swapping.pop(ref, None)
        log.info("%s %s left service: its keys asked for others since", ref.kind, ref.value)

    async def _resolve(self, reference: str | None, task: str, reader: str | None) -> Served:
        await self.catch_up()
        ref = self.snapshot.readable(self._parse(reference, task), reader)
        served = None if ref is None else self._loaded(ref)
        if served is not None:
            return served
        target = None if ref is None else self.snapshot.target(ref)
        if ref is None or target is None:  # not heard of yet (a watch that hears nothing),
            await self.refresh()  # unknown, or not the reader's
            ref = self.snapshot.readable(self._parse(reference, task), reader)
            target = None if ref is None else self.snapshot.target(ref)
        if ref is None or target is None:
            raise UnknownModel(self._unknown(self._parse(reference, task), reader))
        return await self._serve(ref, target)

    def _loaded(self, ref: Ref) -> Served | None:
        if ref.kind == "id":  # ids are not kept in service: they would never leave the cache
            return self.cache.get(self.snapshot.versions.get(ref.value, ""))
        if ref in self._swapping:  # moved: answered by the new version once it is loaded
            return None
        return self.cache.get(self._serving.get(ref, ""))

    async def _serve(self, ref: Ref, target: str) -> Served:
        """The target, loaded (a load under way is waited for) and switched to."""
        try:
            served = await self._load(target)
        except Exception:
            # The load of a move's target failed (its swap logs why): the old version, if
            # any, serves on.
            answering = None if ref.kind == "id" else self.cache.get(self._serving.get(ref, ""))
            if answering is None:
                raise
            return answering
        if ref.kind != "id" and self.snapshot.target(ref) == target:
            self._switch(ref, target)
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
    def _unknown(ref: Ref, reader: str | None) -> str:
        if ref.kind == "task" and reader is not None:
            return f"no {ref.value} model of this key's or shared with it yet"
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
        predictor = await asyncio.to_thread(load_predictor, version, self.settings)
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
