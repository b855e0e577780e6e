"""Experiment definitions in Redis (docs/redis-keys.md, "Experiments"), and the gateway's live
view of them.

Keys (one hash tag, so that a change is one MULTI/EXEC on a Redis Cluster too):

* ``ss:v1:{experiments}:defs``    hash: experiment name -> definition JSON
* ``ss:v1:{experiments}:default`` string: the promoted winner (JSON), the live default
* ``ss:v1:{experiments}:version`` integer: +1 per change; what gateways poll

``ExperimentStore`` checks what it writes (a malformed definition, weights that do not sum
to a positive number, a model version the ranker has not loaded, a second running
experiment are refused with a message naming the cause). ``ExperimentWatcher`` is the
gateway's side: it polls the version key and, when it moved, reads the definitions
again; one that no longer parses (written past the store, by hand) or names a model the
ranker has not loaded leaves the previous definition of that name live, counted and logged.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

from redis.exceptions import WatchError

from services.common.stores.keys import PREFIX
from services.experiments.assignment import Assigner
from services.experiments.definition import (
    ENDED, MODEL, SHADOW, DefinitionError, Experiment, Winner, parse, parse_winner,
)

logger = logging.getLogger(__name__)

DEFINITIONS = f"{PREFIX}:{{experiments}}:defs".encode()
DEFAULT = f"{PREFIX}:{{experiments}}:default".encode()
VERSION = f"{PREFIX}:{{experiments}}:version".encode()


class ModelNotLoaded(DefinitionError):
    """A variant names a model version the ranker has not loaded."""


class ExperimentConflict(DefinitionError):
    """Another experiment is running."""


class UnknownExperiment(DefinitionError):
    """No experiment of that name is stored."""


def check_models(experiment: Experiment, loaded: Collection[str]) -> None:
    """ModelNotLoaded naming the variants whose model version is not in ``loaded``."""
    missing = [f"variants[{n}] ({v.name}): model_version {v.model_version!r}"
               for n, v in enumerate(experiment.variants) if v.model_version and v.model_version not in loaded]
    if missing:
        have = ", ".join(sorted(loaded)) or "none"
        raise ModelNotLoaded(f"the ranker has not loaded {'; '.join(missing)} (loaded: {have})")


@dataclass(frozen=True)
class Malformed:
    """A stored definition that does not parse (written past the store)."""

    name: str
    error: str


class ExperimentStore:
    """Definitions and the live default in Redis (``redis.asyncio`` client, bytes replies)."""

    def __init__(self, redis, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._clock = clock

    async def set(self, definition: Experiment | str | bytes | dict, loaded_models: Collection[str] | None) -> Experiment:
        """Store (create or replace) a running experiment; returns it parsed.

        ``loaded_models``: the model versions the ranker has loaded (``RankerClient.list_models``);
        every variant's version must be among them. ``None`` skips that check, for callers
        that made it themselves. Refused (DefinitionError and subclasses, naming the cause):
        a malformed definition, a version not loaded, another experiment still running.
        """
        experiment = definition if isinstance(definition, Experiment) else parse(definition)
        if experiment.status != "running" or experiment.winner:
            raise DefinitionError("status/winner: set stores a running experiment; promote ends one")
        if loaded_models is not None:
            check_models(experiment, loaded_models)

        async def write(pipe) -> None:
            for name, raw in (await pipe.hgetall(DEFINITIONS)).items():
                name = name.decode()
                if name == experiment.name:
                    continue
                try:
                    other = parse(raw)
                except DefinitionError:
                    continue
                if other.running:
                    raise ExperimentConflict(f"experiment {name!r} is running: promote a variant of it "
                                             f"(`shopstream experiments promote {name} VARIANT`) before starting "
                                             f"{experiment.name!r}")
            pipe.multi()
            pipe.hset(DEFINITIONS, experiment.name, experiment.to_json())
            pipe.incr(VERSION)

        await self._transaction(write)
        return experiment

    async def get(self, name: str) -> Experiment | None:
        """The stored experiment, None when there is none; DefinitionError when it does not parse."""
        raw = await self._redis.hget(DEFINITIONS, name)
        return None if raw is None else parse(raw)

    async def list(self) -> list[Experiment | Malformed]:
        """Every stored definition, by name; those that do not parse as ``Malformed``."""
        out: list[Experiment | Malformed] = []
        for name, raw in sorted((await self._redis.hgetall(DEFINITIONS)).items()):
            try:
                out.append(parse(raw))
            except DefinitionError as exc:
                out.append(Malformed(name.decode(), str(exc)))
        return out

    async def default(self) -> Winner | None:
        """The promoted live default, None while nothing was promoted."""
        raw = await self._redis.get(DEFAULT)
        return None if raw is None else parse_winner(raw)

    async def promote(self, name: str, variant: str) -> Winner:
        """Record ``variant`` of ``name`` as the live default and end the experiment (one transaction).

        Gateways serve a trending winner to everyone; a model (or shadow) winner is served by
        making its version the ranker's live model, which ``services.experiments.cli.promote``
        does (LATEST in the models directory) before calling this."""
        winner: Winner | None = None

        async def write(pipe) -> None:
            nonlocal winner
            raw = await pipe.hget(DEFINITIONS, name)
            if raw is None:
                raise UnknownExperiment(f"no experiment named {name!r}")
            experiment = parse(raw)
            chosen = experiment.variant(variant)
            winner = Winner(experiment=name, variant=chosen.name,
                            kind=MODEL if chosen.kind == SHADOW else chosen.kind,
                            model_version=chosen.model_version, promoted_at_ms=int(self._clock() * 1000))
            ended = experiment.model_copy(update={"status": ENDED, "winner": chosen.name})
            pipe.multi()
            pipe.hset(DEFINITIONS, name, ended.to_json())
            pipe.set(DEFAULT, winner.model_dump_json())
            pipe.incr(VERSION)

        await self._transaction(write)
        assert winner is not None
        return winner

    async def version(self) -> int:
        raw = await self._redis.get(VERSION)
        return int(raw) if raw is not None else 0

    async def snapshot(self) -> tuple[int, dict[str, bytes], bytes | None]:
        """(version, name -> raw definition, raw default), read together."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(VERSION)
            pipe.hgetall(DEFINITIONS)
            pipe.get(DEFAULT)
            version, defs, default = await pipe.execute()
        return (int(version) if version is not None else 0,
                {k.decode(): v for k, v in defs.items()}, default)

    async def _transaction(self, write: Callable[..., Awaitable[None]]) -> None:
        """WATCH the definitions and the version, run ``write`` (reads, then ``pipe.multi()``
        and the writes), retrying when another writer got in between."""
        for _ in range(20):
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(DEFINITIONS, VERSION, DEFAULT)
                    await write(pipe)
                    await pipe.execute()
                    return
                except WatchError:
                    continue
        raise DefinitionError("the experiment definitions kept changing under this write; try again")


# -- the gateway's live view ------------------------------------------------------------


@dataclass(frozen=True)
class Live:
    """What the gateway serves by: the running experiment (at most one) and the promoted default."""

    experiment: Experiment | None = None
    assigner: Assigner | None = None
    default: Winner | None = None
    version: int = -1


@dataclass
class ExperimentWatcher:
    """Keeps ``live`` in step with the store: polls the version key every ``poll_s``.

    ``loaded_models``: an async callable answering the model versions the ranker has loaded,
    or None when that cannot be asked (then only the store's own check at ``set`` applies).
    ``on_error(reason)`` is called once per refused definition version (a metric).
    """

    store: ExperimentStore
    poll_s: float = 1.0
    loaded_models: Callable[[], Awaitable[Collection[str] | None]] | None = None
    on_error: Callable[[str], None] = lambda reason: None
    live: Live = field(default_factory=Live)
    _accepted: dict[str, Experiment] = field(default_factory=dict)
    _refused: dict[str, bytes] = field(default_factory=dict)  # name -> raw already counted

    async def run(self) -> None:
        """Poll forever (cancel to stop); a Redis failure keeps what is live and is logged."""
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("experiment definitions not refreshed: %s", exc or type(exc).__name__)
            await asyncio.sleep(self.poll_s)

    async def poll_once(self) -> Live:
        if await self.store.version() == self.live.version:
            return self.live
        version, raw_defs, raw_default = await self.store.snapshot()
        loaded = None
        accepted: dict[str, Experiment] = {}
        for name, raw in raw_defs.items():
            previous = self._accepted.get(name)
            if previous is not None and previous.to_json().encode() == raw:
                accepted[name] = previous
                continue
            try:
                experiment = parse(raw)
                if experiment.name != name:
                    raise DefinitionError(f"name: {experiment.name!r} is stored under {name!r}")
                if experiment.running and self.loaded_models is not None:
                    if loaded is None:
                        loaded = await self.loaded_models()
                    if loaded is not None:
                        check_models(experiment, loaded)
            except DefinitionError as exc:
                self._refuse(name, raw, exc, previous)
                if previous is not None:
                    accepted[name] = previous
                continue
            self._refused.pop(name, None)
            accepted[name] = experiment
        self._accepted = accepted
        default = self.live.default
        if raw_default is not None:
            try:
                default = parse_winner(raw_default)
            except DefinitionError as exc:
                self._refuse("(default)", raw_default, exc, None)
        else:
            default = None
        running = sorted((e for e in accepted.values() if e.running), key=lambda e: e.name)
        if len(running) > 1:
            logger.warning("%d experiments are running (%s): serving %r only", len(running),
                           ", ".join(e.name for e in running), running[0].name)
        experiment = running[0] if running else None
        current = self.live.experiment
        assigner = self.live.assigner if experiment == current else (Assigner(experiment) if experiment else None)
        if experiment != current:
            logger.info("experiment live: %s", experiment.name if experiment else "none",
                        extra={"experiment": experiment.to_json() if experiment else None})
        self.live = Live(experiment, assigner, default, version)
        return self.live

    def _refuse(self, name: str, raw: bytes, exc: DefinitionError, previous: Experiment | None) -> None:
        if self._refused.get(name) == raw:
            return  # counted and logged already
        self._refused[name] = raw
        reason = "model_not_loaded" if isinstance(exc, ModelNotLoaded) else "malformed"
        self.on_error(reason)
        logger.error("experiment %r refused (%s): %s; %s", name, reason, exc,
                     "the previous definition stays live" if previous is not None else "nothing of it is live")
