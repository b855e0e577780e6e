"""What one loaded model costs in memory, as the ranker can account for it.

Counted, not sampled: the process's RSS moves with every request's temporaries and with
every other model, so it cannot be split per model while serving. The accounting:

- ``embedding_bytes``: every distinct numpy buffer the model holds (the bundle's item and
  attribute tables, the serving table with new items, the unit vectors for Similar, the
  catalog masks) plus the scorer's own copy of the catalog (numpy's transposed table, or
  faiss's inverted lists and centroids). Buffers shared between them count once.
- ``session_bytes``: onnxruntime's sessions: the encoder's ``encoder.onnx`` size (its weights
  are initializers the session keeps) plus the scoring graph's initializers once per session
  that holds them (on CUDA those live in device memory).

Not counted: onnxruntime's activation arenas (they grow with the largest batch seen and
are shared by nothing else but depend on traffic), Python objects (vocabulary lists and
dicts: about a hundred bytes per item). ``bench/models_memory.py`` compares the estimate
with the RSS growth of loading each model, with nothing else running.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from services.common.bundle.files import ENCODER_FILE


@dataclass(frozen=True)
class ModelMemory:
    embedding_bytes: int
    session_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.embedding_bytes + self.session_bytes


def distinct_nbytes(arrays: list[np.ndarray | None]) -> int:
    """Bytes of the buffers under ``arrays``, each buffer once (views and repeats share theirs)."""
    seen: dict[int, int] = {}
    for array in arrays:
        if array is None:
            continue
        owner = array
        while isinstance(owner.base, np.ndarray):
            owner = owner.base
        seen[id(owner)] = max(seen.get(id(owner), 0), owner.nbytes)
    return sum(seen.values())


def model_memory(model) -> ModelMemory:
    """The bytes ``model`` (a ``model_holder.LoadedModel``, which imports this module) holds
    (see the module docstring for what is counted)."""
    bundle, masks, scorer = model.bundle, model.masks, model.scorer
    arrays = distinct_nbytes([bundle.item_embeddings, bundle.attribute_embeddings, model.items.embeddings,
                              model.unit_embeddings, masks.valid, masks.in_stock, masks.category_codes])
    try:
        encoder = os.path.getsize(bundle.path / ENCODER_FILE)
    except OSError:  # removed since it was loaded: the session still holds what it read
        encoder = 0
    return ModelMemory(arrays + (scorer.array_bytes if scorer else 0),
                       encoder + (scorer.session_bytes if scorer else 0))
