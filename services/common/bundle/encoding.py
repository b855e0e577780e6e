"""Running a bundle's encoder over index rows: cropping, length buckets, parallel chunks.

Shared by the ranker's on-request encoding and the features worker's embedding
refresh. Neither cropping nor bucketing changes a result: the model masks padding
and counts positions from the end, and the export's parity check covers cropped
inputs; older fixed-length encoders get [B, max_len].
"""
from __future__ import annotations

from concurrent.futures import Executor

import numpy as np
import onnxruntime as ort

# The encoder's input (int64 [B, L] left-padded item indices) and output (float32 [B, dim]).
INPUT_NAME = "item_seq"
OUTPUT_NAME = "user_emb"
# Rows per length bucket when a large batch is encoded (chosen in docs/performance.md).
ENCODE_BUCKET_ROWS = 16


def pad_rows(rows: list[list[int]], width: int) -> np.ndarray:
    """int64 [len(rows), width], each row right-aligned (left-padded with 0); rows fit in width."""
    batch = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        if row:
            batch[i, width - len(row):] = row
    return batch


def length_buckets(order: np.ndarray, bucket_rows: int) -> list[np.ndarray]:
    """``order`` (rows sorted by length) in consecutive chunks of ``bucket_rows``; a runt last
    chunk (under half a bucket) joins the one before."""
    chunks, start, n = [], 0, len(order)
    while start < n:
        stop = start + bucket_rows
        if n - stop < bucket_rows // 2:
            stop = n
        chunks.append(order[start:stop])
        start = stop
    return chunks


def variable_length(session: ort.InferenceSession) -> bool:
    """Whether the session's sequence axis is symbolic (any length) rather than fixed."""
    shape = session.get_inputs()[0].shape
    return len(shape) == 2 and not isinstance(shape[1], int)


def run_encoder(session: ort.InferenceSession, indices: np.ndarray) -> np.ndarray:
    """``user_emb`` float32 [B, dim] for padded index rows int64 [B, L]."""
    (user_emb,) = session.run([OUTPUT_NAME], {INPUT_NAME: indices})
    return np.asarray(user_emb, dtype=np.float32)


def encode_rows(session: ort.InferenceSession, rows: list[list[int]], *, dim: int, fixed_len: int | None,
                bucket_rows: int = ENCODE_BUCKET_ROWS, pool: Executor | None = None,
                parts: int = 1) -> np.ndarray:
    """User embeddings float32 [B, dim] for index rows, run on ``session``.

    ``fixed_len``: the sequence length of an encoder that takes only [B, fixed_len]
    (``variable_length`` false), else None. A variable-length encoder gets each batch only as wide as its longest row, and
    a large batch (at least 2 * ``bucket_rows``) is sorted by length and run in chunks of
    ``bucket_rows``, each cropped to its own longest row, so a few long histories do
    not make every short one pay for ``max_len`` positions.

    With ``pool`` (for a single-threaded ``session``), any batch of two or more rows is
    sorted by length, split into at least ``parts`` chunks of about ``bucket_rows``, and
    the chunks run concurrently on ``pool``: parallelism over rows rather than inside
    each operator, whose per-operator hand-offs cost more than they save at these sizes.
    """
    if not rows:
        return np.zeros((0, dim), dtype=np.float32)
    if fixed_len is not None:
        return run_encoder(session, pad_rows(rows, fixed_len))
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    parallel = pool is not None and len(rows) > 1
    if not parallel and len(rows) < 2 * bucket_rows:
        return run_encoder(session, pad_rows(rows, max(1, int(lengths.max()))))
    order = np.argsort(lengths, kind="stable")
    if parallel:
        chunks = np.array_split(order, min(len(rows), max(parts, -(-len(rows) // bucket_rows))))
    else:
        chunks = length_buckets(order, bucket_rows)
    out = np.empty((len(rows), dim), dtype=np.float32)

    def run(chunk: np.ndarray) -> None:
        out[chunk] = run_encoder(session, pad_rows([rows[i] for i in chunk], max(1, int(lengths[chunk[-1]]))))

    if parallel:
        for _ in pool.map(run, chunks):  # type: ignore[union-attr]
            pass
    else:
        for chunk in chunks:
            run(chunk)
    return out
