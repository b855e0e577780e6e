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
from services.ranker.scoring import RowFilter, pick_allowed, top_k


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
        for row, job in jobs:
            try:
                excluded = job.item_filter.user_exclusions(job.history, job.purchased)
                ready.append((row, job, RowFilter.build(model.masks, items.index_of, job.item_filter, excluded)))
            except Exception as exc:  # noqa: BLE001 - this caller's problem only
                results[row] = exc
        if not ready:
            return
        users = np.empty((len(ready), model.bundle.dim), dtype=np.float32)
        to_encode = [i for i, (_, job, _) in enumerate(ready) if job.vector is None]
        if to_encode:
            users[to_encode] = model.encode([ready[i][1].history for i in to_encode])
        for i, (_, job, _) in enumerate(ready):
            if job.vector is not None:
                users[i] = job.vector
        fetch = max(job.k + f.drop.size + max(job.k, self._overfetch_min) for _, job, f in ready)
        indices, scores = model.scorer.candidates(users, fetch)
        order = np.lexsort((indices, -scores), axis=-1)  # best first, ties by index: one call per batch
        indices, scores = np.take_along_axis(indices, order, 1), np.take_along_axis(scores, order, 1)
        exhaustive = model.plan.kind == "exact" and indices.shape[1] >= model.scorer.num_rows
        for i, (row, job, row_filter) in enumerate(ready):
            got_i, got_s = pick_allowed(indices[i], scores[i], row_filter, job.k)
            if got_i.size < job.k and not exhaustive:
                if self._on_fallback is not None:
                    self._on_fallback()
                got_i, got_s = top_k(items.embeddings @ users[i], row_filter.mask(), job.k)
            results[row] = Ranked(got_i, got_s)
