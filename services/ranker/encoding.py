"""The serving encoder: history -> user vector, with as little fixed per-call cost as possible.

The bundle's encoder session is the only one a loaded model has; the ranker loads it
single-threaded on the CPU (``session_threads``) and brings the parallelism itself:
batches of up to ``small_batch_max`` users go to onnxruntime in one call, larger ones
are split into at least one length-sorted chunk per thread and the chunks run on the
ranker's encode pool (built once in ``build``, shared by every model loaded).
onnxruntime's own intra-op pool splits every operator of these small matrices and
waits for its slowest thread each time, which measured slower (docs/ranker.md). On
CUDA one multi-threaded session serves every batch.
"""
from __future__ import annotations

from concurrent.futures import Executor

import numpy as np

from services.common.bundle.encoding import ENCODE_BUCKET_ROWS
from services.common.bundle.model import ModelBundle
from services.common.bundle.sessions import CUDA, resolve_threads


def session_threads(providers: tuple[str, ...] | list[str], intra_op_threads: int) -> int:
    """The encoder session's own threads: one on the CPU (the pool parallelises), else as configured."""
    return intra_op_threads if providers[0] == CUDA else 1


class Encoder:
    def __init__(self, *, on_cuda: bool, intra_op_threads: int = 0, pool: Executor | None = None,
                 small_batch_max: int = 4, bucket_rows: int = ENCODE_BUCKET_ROWS) -> None:
        """``pool`` (CPU only) runs a large batch's chunks, at least ``intra_op_threads`` of them,
        in parallel; without it they run one after another."""
        self.threads = 1 if on_cuda else resolve_threads(intra_op_threads)
        self.pool = pool if self.threads > 1 else None
        self.small_batch_max = small_batch_max
        self.bucket_rows = bucket_rows

    def encode(self, bundle: ModelBundle, histories: list[list[str]]) -> np.ndarray:
        """User vectors float32 [B, dim], row i for ``histories[i]`` (unknown items dropped)."""
        return self.encode_rows(bundle, bundle.index_rows(histories))

    def encode_rows(self, bundle: ModelBundle, rows: list[list[int]]) -> np.ndarray:
        """``encode`` for histories already as vocabulary indices (``ModelBundle.index_rows``)."""
        pool = self.pool if len(rows) > self.small_batch_max else None
        return bundle.encode_rows(rows, bucket_rows=self.bucket_rows, pool=pool, parts=self.threads)
