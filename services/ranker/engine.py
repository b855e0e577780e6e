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

A caller with merchandising (a filter expression, boosts, diversity or a category cap:
``services.rules.merchandising``) is scored exactly over the whole catalog instead, since
boosts move items the plain top-``fetch`` would never see; then MMR / the cap re-rank its best
candidates (``diversity.py``). Every answer carries its evidence (``reasons.evidence``): per
picked item the history item nearest in the model's item space, weighted by recency (a
[k x L] product), or with ``reason_window`` > 0 by occlusion (ONE more encoder call for the
batch: each request re-encoded without each of its newest history items).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from services.common.filters import ItemFilter, RowFilter
from services.ranker.diversity import rerank
from services.ranker.model_holder import LoadedModel
from services.ranker import reasons
from services.ranker.scoring import pick_allowed_rows, top_k
from services.rules.evaluate import Interactions
from services.rules.merchandising import Merchandising

# Candidates MMR / the category cap choose from: this many times k, at least RERANK_MIN.
RERANK_FACTOR = 5
RERANK_MIN = 50


@dataclass(frozen=True)
class RankJob:
    model: LoadedModel
    history: list[str]
    purchased: set[str]
    vector: np.ndarray | None  # a fresh embedding from Redis, or None to encode the history
    item_filter: ItemFilter
    k: int
    merch: Merchandising | None = None


@dataclass(frozen=True)
class Ranked:
    indices: np.ndarray  # int64 vocabulary indices, best first
    scores: np.ndarray  # float32
    evidence: np.ndarray | None = None  # int64 per item: the history index that explains it (0: none)
    strength: np.ndarray | None = None  # float32 per item: how much removing it lowers the item's score


class RankEngine:
    def __init__(self, *, overfetch_min: int = 16, on_fallback: Callable[[], None] | None = None,
                 reason_window: int = 0) -> None:
        self._overfetch_min = overfetch_min
        self._reason_window = reason_window
        # Candidates a reason by occlusion ranks an item among (none needed without occlusion).
        self._pool = reasons.POOL if reason_window > 0 else 0
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
        users_all = self._user_vectors(model, [job for _, job, _ in ready])
        answers: list[tuple[int, RankJob, np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray]] = []
        plain = [i for i, (_, job, _) in enumerate(ready) if job.merch is None]
        for i, (row, job, row_filter) in enumerate(ready):
            if job.merch is not None:
                answers.append((row, job, users_all[i], *self._merchandised(model, job, row_filter, users_all[i])))
        if len(plain) < len(ready):
            ready, users = [ready[i] for i in plain], users_all[plain]
        else:
            users = users_all
        if ready:
            answers.extend(self._plain(model, ready, users))
        evidence = reasons.evidence(
            [reasons.Question(user, history_indices(model, job), got[0], pool) for _, job, user, got, pool in answers],
            model.encode_rows, model.items.embeddings, model.unit_embeddings, self._reason_window)
        for (row, _, _, (got_i, got_s), _), ev in zip(answers, evidence):
            results[row] = Ranked(got_i, got_s, ev.item, ev.strength)

    def _plain(self, model: LoadedModel, ready: list[tuple[int, RankJob, RowFilter]], users: np.ndarray) -> list:
        """Rows without merchandising: the scorer's candidates, the first k allowed of each."""
        fetch = max(job.k + f.drop.size + max(job.k, self._overfetch_min) for _, job, f in ready)
        indices, scores = model.scorer.candidates(users, max(fetch, self._pool))
        order = np.lexsort((indices, -scores), axis=-1)  # best first, ties by index: one call per batch
        rows = np.arange(len(order))[:, None]
        indices, scores = indices[rows, order], scores[rows, order]
        exhaustive = model.scorer.exhaustive and indices.shape[1] >= model.scorer.num_rows
        picked = pick_allowed_rows(indices, scores, [f for _, _, f in ready], [job.k for _, job, _ in ready])
        answers = []
        for i, ((row, job, row_filter), got) in enumerate(zip(ready, picked)):
            pool = indices[i, :self._pool]
            if got[0].size < job.k and not exhaustive:
                if self._on_fallback is not None:
                    self._on_fallback()
                got_i, got_s = top_k(model.items.embeddings @ users[i], row_filter.mask(), max(job.k, self._pool))
                got, pool = (got_i[:job.k], got_s[:job.k]), got_i
            answers.append((row, job, users[i], got, pool))
        return answers

    def _merchandised(self, model: LoadedModel, job: RankJob, row_filter: RowFilter,
                      user: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
        """Exact scores plus boosts, under the filter and the expression; re-ranked for variety.
        Returns the picked (indices, scores) and the candidates their reasons rank them among."""
        merch = job.merch
        scores = model.items.embeddings @ user
        mask = row_filter.mask()
        if merch.expression is not None or merch.boosts:
            table = model.rules_table
            allowed = merch.eligible(table, Interactions(job.history, job.purchased))
            if allowed is not None:
                mask &= allowed
            boost = merch.boost(table)
            if boost is not None:
                scores = scores + boost
        if not merch.reranks:
            got_i, got_s = top_k(scores, mask, max(job.k, self._pool))
            return (got_i[:job.k], got_s[:job.k]), got_i
        cand_i, cand_s = top_k(scores, mask, max(RERANK_MIN, RERANK_FACTOR * job.k))
        picked, _ = rerank(cand_i, cand_s, job.k, unit_vectors=model.unit_embeddings, weight=merch.diversity,
                           categories=model.masks.category_codes, cap=merch.max_per_category)
        return (picked, scores[picked].astype(np.float32)), cand_i

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


def history_indices(model: LoadedModel, job: RankJob) -> np.ndarray:
    """The job's history as vocabulary indices of trained items (what a reason may cite)."""
    history = np.array(model.bundle.index_rows([job.history])[0] if job.history else [], dtype=np.int64)
    return history[history <= model.items.num_trained] if history.size else history


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
