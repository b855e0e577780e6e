"""The batch step of Rank: encode who needs it, score the catalog once, filter per caller.

``RankEngine`` is the batch function of the micro-batcher and runs in the executor.
For the jobs of one batch (grouped by model, in case a hot swap splits a batch):

1. compile each caller's filter (O(filter size), not O(catalog));
2. encode, in ONE onnxruntime call, every user without a fresh Redis embedding;
3. ask the model's scorer for the best ``fetch`` candidates of every row at once:
   ``fetch`` over-fetches k + the caller's excluded items + a margin, so the
   top-k is taken where the scores are and only [B, fetch] is ever copied out;
4. per row, keep the first k allowed candidates; when fewer survive (a narrow
   category filter, much out of stock) that row falls back to an exact masked scan.

A failure while compiling one caller's filter fails that caller only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from services.common.filters import ItemFilter
from services.ranker.model_holder import LoadedModel
from services.common.filters import RowFilter
from services.ranker.scoring import pick_allowed_rows, top_k


@dataclass(frozen=True)
class RankJob:
    model: LoadedModel
    history: list[str]
    purchased: set[str]
    vector: np.ndarray | None  # a fresh embedding from Redis, or None to encode the history
    item_filter: ItemFilter
    k: int


@dataclass(frozen=True)
class Ranked:
    indices: np.ndarray  # int64 vocabulary indices, best first
    scores: np.ndarray  # float32


class RankEngine:
    def __init__(self, *, overfetch_min: int = 16, on_fallback: Callable[[], None] | None = None) -> None:
        self._overfetch_min = overfetch_min
        self._on_fallback = on_fallback

    def __call__(self, jobs: Sequence[RankJob]) -> list[Ranked | Exception]:
        results: list[Ranked | Exception | None] = [None] * len(jobs)
        groups: dict[int, list[int]] = {}
        for row, job in enumerate(jobs):
            groups.setdefault(id(job.model), []).append(row)
        for rows in groups.values():
            self._rank_group(jobs[rows[0]].model, [(row, jobs[row]) for row in rows], results)
        return results  # type: ignore[return-value]

    def _rank_group(self, model: LoadedModel, jobs: list[tuple[int, RankJob]], results: list) -> None:
        items = model.items
        ready: list[tuple[int, RankJob, RowFilter]] = []
        compiled: dict[ItemFilter, RowFilter] = {}  # one compiled filter per distinct ItemFilter
        for row, job in jobs:
            try:
                shared = compiled.get(job.item_filter)
                if shared is None:
                    shared = compiled[job.item_filter] = RowFilter.build(model.masks, items.index_of, job.item_filter)
                ready.append((row, job, shared.excluding(items.index_of, user_only_exclusions(job))))
            except Exception as exc:  # noqa: BLE001 - this caller's problem only
                results[row] = exc
        if not ready:
            return
        users = self._user_vectors(model, [job for _, job, _ in ready])
        fetch = max(job.k + f.drop.size + max(job.k, self._overfetch_min) for _, job, f in ready)
        indices, scores = model.scorer.candidates(users, fetch)
        order = np.lexsort((indices, -scores), axis=-1)  # best first, ties by index: one call per batch
        rows = np.arange(len(order))[:, None]
        indices, scores = indices[rows, order], scores[rows, order]
        exhaustive = model.scorer.exhaustive and indices.shape[1] >= model.scorer.num_rows
        picked = pick_allowed_rows(indices, scores, [f for _, _, f in ready], [job.k for _, job, _ in ready])
        for i, ((row, job, row_filter), (got_i, got_s)) in enumerate(zip(ready, picked)):
            if got_i.size < job.k and not exhaustive:
                if self._on_fallback is not None:
                    self._on_fallback()
                got_i, got_s = top_k(items.embeddings @ users[i], row_filter.mask(), job.k)
            results[row] = Ranked(got_i, got_s)

    @staticmethod
    def _user_vectors(model: LoadedModel, jobs: list[RankJob]) -> np.ndarray:
        """[B, D]: Redis vectors where fresh; the rest from ONE encoder call over the distinct histories."""
        to_encode = [i for i, job in enumerate(jobs) if job.vector is None]
        if not to_encode:
            if len(jobs) == 1:
                return np.asarray(jobs[0].vector, dtype=np.float32).reshape(1, -1)
            return np.stack([job.vector for job in jobs]).astype(np.float32, copy=False)
        distinct: dict[tuple[str, ...], int] = {}
        slot = [distinct.setdefault(tuple(jobs[i].history), len(distinct)) for i in to_encode]
        if len(distinct) == len(to_encode):
            encoded = model.encode([jobs[i].history for i in to_encode])
        else:
            encoded = model.encode([list(h) for h in distinct])[slot]
        if len(to_encode) == len(jobs):
            return encoded
        users = np.empty((len(jobs), model.bundle.dim), dtype=np.float32)
        users[to_encode] = encoded
        for i, job in enumerate(jobs):
            if job.vector is not None:
                users[i] = job.vector
        return users


def user_only_exclusions(job: RankJob) -> list[str] | tuple[()]:
    """The caller's state-based exclusions (seen, purchased); the filter's own ids are compiled once."""
    f = job.item_filter
    if f.exclude_seen and f.exclude_purchased:
        return [*job.history, *job.purchased]
    if f.exclude_seen:
        return job.history
    if f.exclude_purchased and job.purchased:
        return list(job.purchased)
    return ()
