"""Replay a dataset of per-user item sequences as live event traffic.

Users are interleaved round-robin (each user's own order is kept), sending is
paced by a token bucket, and every event gets a stable id derived from
``(user, position)``: replaying the same dataset twice is a no-op downstream
because the features worker dedups by event id.
"""
from __future__ import annotations

import hashlib
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp
from kafka.errors import KafkaError
from shopstream.events.v1 import events_pb2

logger = logging.getLogger(__name__)

DEFAULT_TYPE_MIX = {"view": 1.0}
_TYPE_CODES = {"view": 1, "click": 2, "add_to_cart": 3, "purchase": 4}


def event_id(user_id: str, position: int, namespace: str = "replay") -> str:
    """Stable id of the ``position``-th event of ``user_id`` (same input, same id)."""
    return hashlib.sha1(f"{namespace}:{user_id}-{position}".encode()).hexdigest()[:24]


def parse_type_mix(spec: str | Mapping[str, float] | None) -> dict[str, float]:
    """``"view=0.7,click=0.2,purchase=0.1"`` -> weights; unknown types raise ValueError."""
    if spec is None:
        return dict(DEFAULT_TYPE_MIX)
    if isinstance(spec, str):
        mix = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, _, weight = part.partition("=")
            mix[name.strip()] = float(weight) if weight else 1.0
    else:
        mix = dict(spec)
    unknown = set(mix) - set(_TYPE_CODES)
    if unknown or not mix or any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError(f"bad event type mix {spec!r}; types are {sorted(_TYPE_CODES)}")
    return mix


def _pick_type(mix: Mapping[str, float], user_id: str, position: int) -> int:
    """Deterministic per (user, position), so a replay repeats the same types."""
    total = sum(mix.values())
    h = int.from_bytes(hashlib.sha1(f"type:{user_id}-{position}".encode()).digest()[:8], "big") / 2**64
    acc = 0.0
    for name, weight in mix.items():
        acc += weight / total
        if h < acc:
            return _TYPE_CODES[name]
    return _TYPE_CODES[next(reversed(mix))]


def select(sequences: Mapping[str, Sequence[str]], users: int | None = None, holdout: int = 0) -> dict[str, list[str]]:
    """The first ``users`` users (file order), each without their last ``holdout`` items."""
    chosen = itertools.islice(sequences.items(), users) if users else sequences.items()
    out = {}
    for user, items in chosen:
        kept = list(items[: len(items) - holdout] if holdout else items)
        if kept:
            out[user] = kept
    return out


def interleave(sequences: Mapping[str, Sequence[str]]) -> Iterator[tuple[str, int, str]]:
    """Round-robin ``(user, position, item)``: everyone's 1st event, then everyone's 2nd, ..."""
    for position in range(max((len(s) for s in sequences.values()), default=0)):
        for user, items in sequences.items():
            if position < len(items):
                yield user, position, items[position]


def to_events(
    sequences: Mapping[str, Sequence[str]],
    type_mix: Mapping[str, float] | None = None,
    clock: Callable[[], float] = time.time,
    namespace: str = "replay",
) -> Iterator[events_pb2.Event]:
    """Interleaved events with stable ids, stamped with ``clock()`` as they are produced."""
    mix = parse_type_mix(type_mix)
    for user, position, item in interleave(sequences):
        ts = Timestamp()
        ts.FromNanoseconds(int(clock() * 1e9))
        yield events_pb2.Event(
            event_id=event_id(user, position, namespace), user_id=user, item_id=item,
            type=_pick_type(mix, user, position), occurred_at=ts, session_id=f"{user}-replay",
        )


@dataclass
class TokenBucket:
    """Allows ``rate`` tokens per second with bursts up to ``burst``."""

    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst <= 0:
            raise ValueError("rate and burst must be positive")
        self._tokens = self.burst
        self._last = self.clock()

    def take(self, n: float) -> None:
        """Block until ``n`` tokens (n <= burst) are available, then spend them."""
        while True:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= n - 1e-9:  # float dust must not turn into endless tiny sleeps
                self._tokens = max(0.0, self._tokens - n)
                return
            self.sleep((n - self._tokens) / self.rate)


def paced_batches(items: Iterable, rate: float | None, batch_size: int = 100,
                  bucket: TokenBucket | None = None) -> Iterator[list]:
    """Group ``items`` into batches and release them at ``rate`` items/s (None = unpaced)."""
    if rate is not None and bucket is None:
        batch_size = max(1, min(batch_size, int(rate)))  # ~1 batch per second at low rates
        bucket = TokenBucket(rate=rate, burst=batch_size)
    it = iter(items)
    while batch := list(itertools.islice(it, batch_size)):
        if bucket is not None:
            bucket.take(len(batch))
        yield batch


DEFAULT_MAX_OUTAGE_S = 60.0
FLUSH_EVERY = 10  # batches between deliveries checked: what a failure sends again is at most this many


def replay(producer, sequences: Mapping[str, Sequence[str]], rate: float | None = None, users: int | None = None,
           holdout: int = 0, type_mix: Mapping[str, float] | str | None = None, batch_size: int = 100,
           max_outage_s: float = DEFAULT_MAX_OUTAGE_S, flush_every: int = FLUSH_EVERY,
           clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
           on_sent: Callable[[int], None] | None = None) -> int:
    """Publish the dataset through ``producer.send_events``; returns the number of events sent.

    A broker outage (a restart, say) pauses the replay instead of ending it: sends and
    flushes that fail are tried again until they succeed or the broker has been failing
    for ``max_outage_s``, when the last error is raised. The contract's producer
    reconnects and sends again what was not delivered; a batch that was queued before its
    send failed may go out twice, which the stable event ids make harmless downstream.
    ``on_sent(n)`` after each batch of ``n`` events is handed to the producer (a progress bar).
    """
    chosen = select(sequences, users=users, holdout=holdout)
    retry = _OutageRetry(max_outage_s, clock, sleep)
    sent = 0
    for n, batch in enumerate(paced_batches(to_events(chosen, parse_type_mix(type_mix)), rate, batch_size), 1):
        retry(lambda: producer.send_events(batch, wait=False))
        sent += len(batch)
        if on_sent is not None:
            on_sent(len(batch))
        if n % flush_every == 0:
            retry(producer.flush)
    retry(producer.flush)
    return sent


class _OutageRetry:
    """Runs an action until it succeeds, for at most ``max_outage_s`` of consecutive failures."""

    def __init__(self, max_outage_s: float, clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        self._max_outage_s = max_outage_s
        self._clock = clock
        self._sleep = sleep

    def __call__(self, action: Callable[[], object]) -> None:
        failing_since = None
        backoff = 0.05
        while True:
            try:
                action()
                if failing_since is not None:
                    logger.warning("the broker answers again after %.1f s", self._clock() - failing_since)
                return
            except (KafkaError, ConnectionError) as exc:
                now = self._clock()
                failing_since = now if failing_since is None else failing_since
                if now - failing_since >= self._max_outage_s:
                    raise
                logger.warning("publishing failed (%s): trying again, for up to %.0f s", exc, self._max_outage_s)
                self._sleep(backoff)  # the producer's own timeout paces the attempts; this only spaces quick failures
                backoff = min(1.0, backoff * 2)
