"""Why an item was recommended: the history item that explains it.

``evidence`` is what the ranker calls, per batch:

- window 0 (the default, ``SHOPSTREAM_RANKER_REASON_WINDOW``): ``recent-cosine``, the history
  item most similar to the recommended one in the model's item space, the similarity weighted
  by recency (a sequence model leans on its newest items): one [k x L] product per request;
- window w > 0: occlusion (``occlude``) over the newest w distinct history items. Each is
  removed from the history in turn and the rest re-encoded (ONE encoder call for every
  request of the batch: w extra rows per request); a recommended item cites the history item
  whose removal lowers its rank most among the request's best candidates (``POOL`` of them),
  equal ranks decided by the larger drop of its score, which is its strength. This asks the
  model the question the faithfulness check asks, and costs the encoder rows.

``bench/reasons.py`` measures every method on a trained bundle (removing the cited item must
lower the recommended item's rank more than removing a random other history item), and
``bench/ranker.py`` what occlusion costs: bench/results/reasons-beauty-seed*.json and
ranker.json, docs/rules.md. Also measured (``METHODS``): the nearest history item without the
recency weight (``cosine``; ``dot`` unnormalised) and the newest history item (``recent``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

METHODS = ("cosine", "dot", "recent", "recent-cosine")
# Occlusion: how many of the request's best candidates a recommended item's rank is counted
# among, and the window bench/reasons.py measures by default.
POOL = 64
WINDOW = 2
# "recent-cosine": cosine weighted by recency, RECENCY_DECAY per step back from the newest item:
# a sequence model leans on the newest items, so a similar item far back explains less.
RECENCY_DECAY = 0.3


@dataclass(frozen=True)
class Evidence:
    item: np.ndarray  # int64 [k]: vocabulary index of the explaining history item (0: none)
    strength: np.ndarray  # float32 [k]: occlusion: the score drop; cosine methods: the similarity


@dataclass(frozen=True)
class Question:
    """One request to explain: its user vector, history (vocabulary indices, oldest first),
    the items it recommends and the candidates their rank is counted among."""

    user: np.ndarray  # float32 [D]
    history: np.ndarray  # int64 [L]
    picked: np.ndarray  # int64 [k]
    pool: np.ndarray  # int64 [C]


def evidence(questions: Sequence[Question], encode_rows: Callable[[list[list[int]]], np.ndarray],
             item_vectors: np.ndarray, unit_vectors: np.ndarray, window: int = 0) -> list[Evidence]:
    """The served evidence for each question (module docstring): ``recent-cosine`` over
    ``unit_vectors`` when ``window`` is 0, else occlusion over the newest ``window`` items."""
    if window == 0:
        return [explain(unit_vectors, q.history, q.picked, "recent-cosine") for q in questions]
    return occlude(questions, encode_rows, item_vectors, window)


def none(k: int) -> Evidence:
    return Evidence(np.zeros(k, dtype=np.int64), np.zeros(k, dtype=np.float32))


def occluded(history: np.ndarray, window: int = WINDOW) -> tuple[np.ndarray, list[list[int]]]:
    """The newest ``window`` distinct items of ``history`` and, for each, the history without it."""
    tried = np.array(list(dict.fromkeys(history[::-1].tolist()))[:window], dtype=np.int64)
    rows = history.tolist()
    return tried, [[x for x in rows if x != c] for c in tried.tolist()]


def occlude(questions: Sequence[Question], encode_rows: Callable[[list[list[int]]], np.ndarray],
            item_vectors: np.ndarray, window: int = WINDOW) -> list[Evidence]:
    """``Evidence`` per question by occlusion (module docstring); one ``encode_rows`` call."""
    tried, rows = [], []
    for q in questions:
        items, without = occluded(q.history, window) if q.picked.size else (np.zeros(0, np.int64), [])
        tried.append(items)
        rows.extend(without)
    encoded = encode_rows(rows) if rows else np.zeros((0, item_vectors.shape[1]), dtype=np.float32)
    out, start = [], 0
    for q, items in zip(questions, tried):
        if not items.size:
            out.append(none(q.picked.size))
            continue
        ablated = encoded[start:start + items.size]  # [w, D]
        start += items.size
        picked_vecs = item_vectors[q.picked]  # [k, D]
        scores = ablated @ picked_vecs.T  # [w, k]
        pool_scores = ablated @ item_vectors[q.pool].T  # [w, C]
        ranks = (pool_scores[:, None, :] > scores[:, :, None]).sum(axis=2)  # [w, k]
        drops = (q.user @ picked_vecs.T)[None, :] - scores  # [w, k]
        best = np.lexsort((drops, ranks), axis=0)[-1]  # per item: the largest rank, then drop
        cols = np.arange(q.picked.size)
        out.append(Evidence(items[best], drops[best, cols].astype(np.float32)))
    return out


def explain(vectors: np.ndarray, history: np.ndarray, picked: np.ndarray, method: str = "cosine") -> Evidence:
    """Evidence for each of ``picked`` (vocabulary indices) from ``history`` (indices, oldest
    first, no padding) by a similarity method. ``vectors`` are the item vectors the method
    compares: unit rows (``scoring.unit_rows``) for "cosine", raw output embeddings for "dot";
    "recent" cites the newest history item."""
    k = len(picked)
    if not len(history) or not k:
        return none(k)
    if method == "recent":
        return Evidence(np.full(k, history[-1], dtype=np.int64), np.zeros(k, dtype=np.float32))
    sims = vectors[picked] @ vectors[history].T  # [k, L]
    if method == "recent-cosine":
        weights = RECENCY_DECAY ** np.arange(len(history) - 1, -1, -1, dtype=np.float32)
        best = (np.maximum(sims, 0) * weights).argmax(axis=1)
    else:
        best = sims.argmax(axis=1)
    return Evidence(np.asarray(history, dtype=np.int64)[best], sims[np.arange(k), best].astype(np.float32))
