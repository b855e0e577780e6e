"""The serving encoder: history -> user vector, with as little fixed per-call cost as possible.

``ModelBundle.encode_rows`` crops every call to its longest history and encodes a
batch in length-sorted chunks (shared with the features worker). On the CPU the
ranker runs **single-threaded sessions, in parallel over chunks**: batches of up to
``small_batch_max`` users go to onnxruntime in one call, larger ones are split into
at least one chunk per thread and the chunks run on the ranker's encode pool (built
once in ``main``, shared by every model loaded). onnxruntime's own intra-op pool
splits every operator of these small matrices and waits for its slowest thread each
time; measured on the 2-core box, batch 64 (5-50 items each)
took 3.83 ms on a two-thread session, 3.06 ms on one thread and 1.87 ms as four
chunks over two single-threaded workers. On CUDA one session serves every batch.
"""
from __future__ import annotations

import os
from concurrent.futures import Executor

import numpy as np

from services.common.model_bundle import ENCODE_BUCKET_ROWS, ModelBundle
from services.ranker.runtime import CUDA, make_session, resolve_threads


class Encoder:
    def __init__(self, path: str | os.PathLike[str], providers: tuple[str, ...], *, intra_op_threads: int = 0,
                 allow_spinning: bool = False, pool: Executor | None = None, small_batch_max: int = 4,
                 bucket_rows: int = ENCODE_BUCKET_ROWS) -> None:
        """``pool`` (CPU only) runs a large batch's chunks, at least ``intra_op_threads`` of them,
        in parallel; without it they run one after another."""
        # On the CPU every call is single-threaded; the pool provides the parallelism.
        self.session = make_session(path, providers, intra_op_threads=1 if providers[0] != CUDA else intra_op_threads,
                                    allow_spinning=allow_spinning)
        on_cpu = self.session.get_providers()[0] != CUDA
        self.threads = resolve_threads(intra_op_threads) if on_cpu else 1
        self.pool = pool if self.threads > 1 else None
        self.small_batch_max = small_batch_max
        self.bucket_rows = bucket_rows

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def encode(self, bundle: ModelBundle, histories: list[list[str]]) -> np.ndarray:
        """User vectors float32 [B, dim], row i for ``histories[i]`` (unknown items dropped)."""
        pool = self.pool if len(histories) > self.small_batch_max else None
        return bundle.encode_rows(self.session, bundle.index_rows(histories), self.bucket_rows,
                                  pool=pool, parts=self.threads)
