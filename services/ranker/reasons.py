"""Why an item was recommended: the history item that explains it best in the model's item space.

For each recommended item the evidence is the history item whose output embedding is most
similar (cosine) to the recommended item's: the model scores items by a dot product with a user
vector built from those same history items, so the nearest history item is the one whose removal
moves the recommended item most. ``bench/reasons.py`` measures that faithfulness against the
other methods tried (raw dot product, the most recent item, a random one) on a trained bundle.
It costs one [k x L] product per request, inside the ranker's batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHODS = ("cosine", "dot", "recent")


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
    best = sims.argmax(axis=1)
    return Evidence(np.asarray(history, dtype=np.int64)[best], sims[np.arange(k), best].astype(np.float32))
