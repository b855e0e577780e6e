"""The serving encoder: history -> user vector, with as little fixed per-call cost as possible.

``ModelBundle.encode_rows`` already crops every call to its longest history and
encodes a large batch in length buckets (shared with the features worker). On top
of that the ranker keeps **a single-threaded session for small batches**: at batch
1-``small_batch_max`` the intra-op thread pool's hand-offs cost more than they save
(measured on the 2-core box: batch 1, 50 items, 0.16 ms on one thread vs 0.21 ms on
two), while large batches still use every thread. On CUDA one session serves both.
"""
from __future__ import annotations

import os

import numpy as np

from services.common.model_bundle import ENCODE_BUCKET_ROWS, ModelBundle
from services.ranker.runtime import make_session, single_threaded_twin


class Encoder:
    def __init__(self, path: str | os.PathLike[str], providers: tuple[str, ...], *, intra_op_threads: int = 0,
                 allow_spinning: bool = False, small_batch_max: int = 4,
                 bucket_rows: int = ENCODE_BUCKET_ROWS) -> None:
        self.large = make_session(path, providers, intra_op_threads=intra_op_threads, allow_spinning=allow_spinning)
        self.small = single_threaded_twin(path, providers, self.large, intra_op_threads)
        self.small_batch_max = small_batch_max
        self.bucket_rows = bucket_rows

    @property
    def providers(self) -> list[str]:
        return self.large.get_providers()

    def encode(self, bundle: ModelBundle, histories: list[list[str]]) -> np.ndarray:
        """User vectors float32 [B, dim], row i for ``histories[i]`` (unknown items dropped)."""
        session = self.small if len(histories) <= self.small_batch_max else self.large
        return bundle.encode_rows(session, bundle.index_rows(histories), self.bucket_rows)
