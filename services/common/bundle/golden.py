"""A golden input recorded when a bundle is published, checked when it is loaded.

Publishing runs the encoder on a few fixed index rows and stores them with the
user vectors it produced in ``metadata.json`` (``golden``). Loading runs the same
rows through the session it will serve with and compares: a bundle whose files
were altered with consistent checksums, an encoder that no longer matches its
item table, or a runtime that computes something else (another provider, a broken
build) is refused before it goes live rather than served.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort

from services.common.bundle.encoding import pad_rows, run_encoder
from services.common.bundle.errors import BundleError
from services.common.bundle.sessions import make_session

# fp32 on the CPU reproduces the recorded vectors to ~1e-6; CUDA and fp16 paths differ more.
RTOL, ATOL = 1e-3, 1e-3


def golden_rows(num_items: int, max_len: int) -> list[list[int]]:
    """Fixed, valid index rows: one item, a run of items, a full-length row, the last item."""
    if num_items < 1 or max_len < 1:
        return []
    run = list(range(1, min(num_items, 5) + 1))
    full = [1 + (i * 7) % num_items for i in range(max_len)]
    return [[1], run, full, [num_items]]


def record_golden(encoder_path: str | os.PathLike[str], num_items: int, max_len: int) -> dict[str, Any]:
    """``{"rows", "user_emb"}`` of this encoder on the golden rows (CPU, fp32)."""
    rows = golden_rows(num_items, max_len)
    if not rows:
        return {"rows": [], "user_emb": []}
    session = make_session(encoder_path, intra_op_threads=1)
    return {"rows": rows, "user_emb": run_encoder(session, pad_rows(rows, max_len)).tolist()}


def check_golden(session: ort.InferenceSession, metadata: dict[str, Any], max_len: int, dim: int,
                 where: str) -> None:
    """Raise BundleError unless ``session`` reproduces the recorded golden vectors (finite, [n, dim])."""
    golden = metadata.get("golden")
    if golden is None:
        raise BundleError(f"bundle {where}: metadata.json has no golden input (published before validation?)")
    rows, expected = golden.get("rows") or [], np.asarray(golden.get("user_emb") or [], dtype=np.float32)
    if not rows:
        return
    got = run_encoder(session, pad_rows(rows, max_len))
    if got.shape != (len(rows), dim):
        raise BundleError(f"bundle {where}: encoder returns shape {got.shape}, expected ({len(rows)}, {dim})")
    if not np.isfinite(got).all():
        raise BundleError(f"bundle {where}: encoder returns non-finite values on the golden input")
    if expected.shape != got.shape or not np.allclose(got, expected, rtol=RTOL, atol=ATOL):
        worst = float(np.max(np.abs(got - expected))) if expected.shape == got.shape else float("nan")
        raise BundleError(f"bundle {where}: encoder output differs from the golden output recorded at "
                          f"publishing (max |diff| {worst:.3g})")
