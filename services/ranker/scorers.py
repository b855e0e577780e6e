"""The catalog scorer a loaded model uses: what every backend offers, and picking one by plan.

Backends: ``exact.NumpyExact``, ``exact.OnnxExact`` (CPU or CUDA) and ``ann.IvfIndex``.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from services.ranker.ann import IvfIndex
from services.ranker.exact import NumpyExact, OnnxExact
from services.ranker.runtime import ScoringConfig, ScoringPlan


class CatalogScorer(Protocol):
    """Best candidates of the whole catalog for a batch of user vectors."""

    name: str
    num_rows: int  # catalog rows, padding row 0 included
    exhaustive: bool  # whether ``candidates`` looks at every row (exact) or approximates (ANN)
    array_bytes: int  # its own copy of the catalog in numpy/faiss memory
    session_bytes: int  # initializers held by its onnxruntime sessions

    def candidates(self, users: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices int64 [B, K], scores float32 [B, K]) with K <= fetch, unsorted."""
        ...


def build_scorer(plan: ScoringPlan, item_embeddings: np.ndarray, config: ScoringConfig) -> CatalogScorer:
    """The planned scorer over ``item_embeddings`` [N+1, D]."""
    if plan.kind == "ann":
        return IvfIndex(item_embeddings, nlist=config.ann_nlist, nprobe=config.ann_nprobe,
                        target_recall=config.ann_target_recall, threads=config.intra_op_threads)
    if plan.backend == "onnx":
        return OnnxExact(item_embeddings, plan.providers, fp16=plan.fp16, intra_op_threads=config.intra_op_threads)
    return NumpyExact(item_embeddings)
