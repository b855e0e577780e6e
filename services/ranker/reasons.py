"""Why an item was recommended: the history item that explains it.

Methods tried (``METHODS``): the history item nearest to the recommended one in the model's
output item space (``cosine``; ``dot`` without normalising), that similarity weighted by recency
(``recent-cosine``), and the newest history item (``recent``). ``bench/reasons.py`` measures
each one's faithfulness on a trained bundle (removing the cited item must lower the recommended
item's rank more than removing another history item); the ranker serves ``SERVED``, the most
faithful. It costs at most one [k x L] product per request, inside the ranker's batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHODS = ("cosine", "dot", "recent", "recent-cosine")
# What the ranker serves: the most faithful method measured on Amazon Beauty (bench/reasons.py,
# bench/results/reasons-beauty-seed*.json): removing the newest history item moves the
# recommended item more often than removing the nearest one in item space, since a SASRec
# model leans on the newest items. The price: one row shares one evidence item.
SERVED = "recent"
# "recent-cosine": cosine weighted by recency, RECENCY_DECAY per step back from the newest item:
# a sequence model leans on the newest items, so a similar item far back explains less.
RECENCY_DECAY = 0.3


@dataclass(frozen=True)
class Evidence:
    item: np.ndarray  # int64 [k]: vocabulary index of the explaining history item (0: none)
    strength: np.ndarray  # float32 [k]: its similarity (cosine for "cosine")


def explain(vectors: np.ndarray, history: np.ndarray, picked: np.ndarray, method: str = "cosine") -> Evidence:
    """Evidence for each of ``picked`` (vocabulary indices) from ``history`` (indices, oldest
    first, no padding). ``vectors`` are the item vectors the method compares: unit rows
    (``scoring.unit_rows``, the loaded model's ``unit_embeddings``) for "cosine", raw output
    embeddings for "dot"; "recent" cites the newest history item."""
    k = len(picked)
    if not len(history) or not k:
        return Evidence(np.zeros(k, dtype=np.int64), np.zeros(k, dtype=np.float32))
    if method == "recent":
        return Evidence(np.full(k, history[-1], dtype=np.int64), np.zeros(k, dtype=np.float32))
    sims = vectors[picked] @ vectors[history].T  # [k, L]
    if method == "recent-cosine":
        weights = RECENCY_DECAY ** np.arange(len(history) - 1, -1, -1, dtype=np.float32)
        best = (np.maximum(sims, 0) * weights).argmax(axis=1)
    else:
        best = sims.argmax(axis=1)
    return Evidence(np.asarray(history, dtype=np.int64)[best], sims[np.arange(k), best].astype(np.float32))
