"""The simulation driver: shoppers as asyncio tasks on one grpc.aio channel to the gateway.

Each shopper draws from its own ``random.Random(f"{seed}:{user_id}")``, in a fixed order
per list (how many lists a session has, what it does with each list, how long it
pauses), so a run's decisions are reproducible given the lists served; what the
gateway serves depends on the live system (timing, model, experiment assignment).
Event ids carry a run id, so two runs against one system never collide in its
dedup sets.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from shopstream.events.v1 import events_pb2
from shopstream.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from services.ingest.synthetic import SyntheticDataset
from services.simulator.behaviour import BehaviourConfig, look
from services.simulator.journal import Journal, Summary, summarize
from services.simulator.tastes import Catalog, Taste, TasteConfig, tastes_of

logger = logging.getLogger(__name__)

_TYPES = {"click": events_pb2.EVENT_TYPE_CLICK, "add_to_cart": events_pb2.EVENT_TYPE_ADD_TO_CART,
          "purchase": events_pb2.EVENT_TYPE_PURCHASE}


@dataclass(frozen=True)
class SimulationConfig:
    shoppers: int = 50
    duration_s: float = 60.0  # wall-clock length of the run (0: until lists_per_shopper or stop())
    lists_per_shopper: int | None = None  # stop each shopper after this many lists
    seed: int = 0
    k: int = 10
    think_s: float = 0.5  # mean pause between two lists of a session (exponential)
    session_gap_s: float = 2.0  # mean pause between sessions (exponential)
    min_lists_per_session: int = 1
    max_lists_per_session: int = 5
    drift_after_s: float | None = None  # tastes rotate this many seconds into the run
    drift_after_sessions: int | None = None  # ... or after each shopper's Nth session
    drift_shift: int | None = None  # how far the categories rotate (default: half the categories)
    timeout_s: float = 5.0
    max_in_flight: int | None = None  # calls to the gateway at once, all shoppers together (None: no bound)
    users: tuple[str, ...] | None = None  # which generated users shop (default: a seeded sample)
    taste: TasteConfig = field(default_factory=TasteConfig)
    behaviour: BehaviourConfig = field(default_factory=BehaviourConfig)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["users"] = None if self.users is None else len(self.users)
        return out


def variant_of(resp: gateway_pb2.RecommendResponse) -> str:
    """The variant the gateway names; for a gateway that names none, the rule or model that served."""
    if resp.variant:
        return resp.variant
    if resp.strategy == gateway_pb2.STRATEGY_TRENDING:
        return "trending"
    return resp.model_version or "unknown"


def pick_shoppers(ds: SyntheticDataset, n: int, seed: int) -> list[str]:
    users = sorted(ds.preferences, key=lambda u: int(u[1:]) if u[1:].isdigit() else u)
    if n > len(users):
        raise ValueError(f"{n} shoppers asked for, the dataset has {len(users)} users")
    return sorted(random.Random(seed).sample(users, n), key=users.index)


def _now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


class Simulation:
    """One run: ``await run()`` (or ``start_in_thread()`` / ``stop()``), then ``summary()``."""

    def __init__(self, gateway_addr: str, dataset: SyntheticDataset, cfg: SimulationConfig,
                 journal: Journal, *, token: str | None = None, run_id: str | None = None) -> None:
        self.gateway_addr = gateway_addr
        self.cfg = cfg
        self.catalog = Catalog.from_dataset(dataset)
        self.tastes = tastes_of(dataset)
        self.users = list(cfg.users) if cfg.users is not None else pick_shoppers(dataset, cfg.shoppers, cfg.seed)
        unknown = [u for u in self.users if u not in self.tastes]
        if unknown:
            raise ValueError(f"users without a generated taste: {unknown[:5]}")
        self.shift = cfg.drift_shift if cfg.drift_shift is not None else max(1, len(self.catalog.categories) // 2)
        self.journal = journal
        self.run_id = run_id or uuid.uuid4().hex[:8]
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._stopping: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | contextlib.nullcontext = contextlib.nullcontext()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._start: float | None = None
        self.error: BaseException | None = None

    # -- running ---------------------------------------------------------------

    async def run(self) -> Summary:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if self.cfg.max_in_flight:
            self._slots = asyncio.Semaphore(self.cfg.max_in_flight)
        if self._start is None:
            self._start = time.monotonic()
        self.journal.write("run", run_id=self.run_id, gateway=self.gateway_addr, started_at=time.time(),
                           shoppers=len(self.users), config=self.cfg.as_dict(), drift_shift=self.shift,
                           categories=list(self.catalog.categories))
        async with grpc.aio.insecure_channel(self.gateway_addr) as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            tasks = [asyncio.create_task(self._shop(stub, user)) for user in self.users]
            if self.cfg.duration_s > 0:
                try:
                    await asyncio.wait_for(self._stopping.wait(), self.cfg.duration_s)
                except TimeoutError:
                    pass
                self._stopping.set()
            await asyncio.gather(*tasks)
        return self.summary()

    def start_in_thread(self) -> "Simulation":
        """Run in a thread of its own (its own event loop) until the duration ends or ``stop()``."""
        def target() -> None:
            try:
                asyncio.run(self.run())
            except BaseException as exc:  # reported by join()
                self.error = exc
        self._start = time.monotonic()  # the run's clock starts now, for callers timing phases by it
        self._thread = threading.Thread(target=target, name="simulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask every shopper to finish its current list and stop (thread-safe; nothing once the
        run has ended)."""
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stopping.set)

    def join(self, timeout: float | None = None) -> Summary:
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError("the simulator did not stop in time")
        if self.error is not None:
            raise self.error
        return self.summary()

    def elapsed(self) -> float:
        """Seconds since the run started (0 before)."""
        return 0.0 if self._start is None else time.monotonic() - self._start

    def summary(self) -> Summary:
        return summarize(self.journal.records)

    # -- one shopper -------------------------------------------------------------

    async def _pause(self, mean: float, rng: random.Random) -> None:
        delay = rng.expovariate(1.0 / mean) if mean > 0 else 0.0
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except TimeoutError:
            pass

    def _drift_due(self, sessions: int) -> bool:
        if self.cfg.drift_after_s is not None and self.elapsed() >= self.cfg.drift_after_s:
            return True
        return self.cfg.drift_after_sessions is not None and sessions > self.cfg.drift_after_sessions

    async def _shop(self, stub: gateway_pb2_grpc.GatewayServiceStub, user: str) -> None:
        cfg = self.cfg
        rng = random.Random(f"{cfg.seed}:{user}")
        taste: Taste = self.tastes[user]
        drifted, last_clicked, sessions, lists, events = False, None, 0, 0, 0
        await self._pause(cfg.think_s, rng)  # shoppers do not all arrive at once
        while not self._stopping.is_set():
            sessions += 1
            session_id = f"sim-{self.run_id}-{user}-{sessions}"
            for _ in range(rng.randint(cfg.min_lists_per_session, cfg.max_lists_per_session)):
                if self._stopping.is_set() or (cfg.lists_per_shopper is not None and lists >= cfg.lists_per_shopper):
                    break
                if not drifted and self._drift_due(sessions):
                    taste, drifted = taste.drifted(self.catalog, self.shift), True
                lists += 1
                try:
                    async with self._slots:
                        resp = await stub.Recommend(gateway_pb2.RecommendRequest(user_id=user, k=cfg.k),
                                                    timeout=cfg.timeout_s, metadata=self._metadata)
                except grpc.aio.AioRpcError as exc:
                    self.journal.write("error", t=self.elapsed(), call="Recommend", user_id=user,
                                       code=exc.code().name, details=exc.details())
                    await self._pause(cfg.think_s, rng)
                    continue
                items = [it.item_id for it in resp.items]
                affinities = [taste.affinity(self.catalog, i, last_clicked, cfg.taste) for i in items]
                outcome = look(affinities, rng, cfg.behaviour)
                variant = variant_of(resp)
                self.journal.write(
                    "list", t=self.elapsed(), user_id=user, session_id=session_id,
                    recommendation_id=resp.recommendation_id, variant=variant, experiment=resp.experiment,
                    strategy=gateway_pb2.Strategy.Name(resp.strategy).removeprefix("STRATEGY_").lower(),
                    model_version=resp.model_version, degraded=resp.degraded, items=items,
                    click_probability=outcome.click_probability, drifted=drifted)
                if outcome.clicked is not None:
                    item = items[outcome.clicked]
                    kinds = ["click"] + ["add_to_cart"] * outcome.add_to_cart + ["purchase"] * outcome.purchase
                    batch = []
                    for kind in kinds:
                        events += 1
                        ev = events_pb2.Event(
                            event_id=f"sim-{self.run_id}-{user}-{events}", user_id=user, item_id=item,
                            type=_TYPES[kind], occurred_at=_now(), session_id=session_id,
                            recommendation_id=resp.recommendation_id, position=outcome.clicked)
                        if kind == "purchase":
                            ev.value = self.catalog.price.get(item, 0.0)
                        batch.append((kind, ev))
                    await self._track(stub, user, variant, batch)
                    last_clicked = item
                await self._pause(cfg.think_s, rng)
            if cfg.lists_per_shopper is not None and lists >= cfg.lists_per_shopper:
                break
            await self._pause(cfg.session_gap_s, rng)

    async def _track(self, stub, user: str, variant: str, batch: list[tuple[str, events_pb2.Event]]) -> None:
        request = gateway_pb2.TrackEventsRequest(events=[ev for _, ev in batch])
        try:
            async with self._slots:
                await stub.TrackEvents(request, timeout=self.cfg.timeout_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            self.journal.write("error", t=self.elapsed(), call="TrackEvents", user_id=user, code=exc.code().name,
                               details=exc.details(), event_ids=[ev.event_id for _, ev in batch])
            return
        for kind, ev in batch:
            self.journal.write("event", t=self.elapsed(), event_id=ev.event_id, user_id=user, item_id=ev.item_id,
                               type=kind, recommendation_id=ev.recommendation_id, position=ev.position,
                               variant=variant, value=ev.value if ev.HasField("value") else None)
