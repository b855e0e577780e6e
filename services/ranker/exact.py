"""Exact top-k over the whole catalog, computed where the scores are.

Both backends score a batch with ONE matrix product [B, D] x [D, N+1] (split into
row blocks only when the score block would exceed ``max_block_bytes``) and hand
back just the best ``fetch`` candidates per row, unsorted:

- ``NumpyExact``: BLAS matmul into a fresh buffer, padding column set to -inf in
  place, one ``argpartition`` along the rows;
- ``OnnxExact``: an ONNX graph MatMul + static catalog bias (-inf for padding) +
  TopK, so on a GPU the [B, N+1] scores never leave the device (fp16 there).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from services.common.bundle.sessions import make_session, single_threaded_twin

DEFAULT_MAX_BLOCK_BYTES = 256 << 20


def _row_blocks(batch: int, num_cols: int, max_block_bytes: int) -> list[slice]:
    rows = max(1, max_block_bytes // (4 * num_cols))
    return [slice(i, min(i + rows, batch)) for i in range(0, batch, rows)]


class NumpyExact:
    name = "exact-numpy"
    exhaustive = True

    def __init__(self, item_embeddings: np.ndarray, max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES) -> None:
        self._items_t = np.ascontiguousarray(item_embeddings.T, dtype=np.float32)  # [D, N+1]
        self.num_rows = item_embeddings.shape[0]
        self.array_bytes = self._items_t.nbytes  # its own transposed copy of the catalog
        self.session_bytes = 0
        self._max_block_bytes = max_block_bytes

    def candidates(self, users: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices int64 [B, K], scores float32 [B, K]) with K = min(fetch, N+1), unsorted."""
        fetch = min(fetch, self.num_rows)
        out_idx = np.empty((users.shape[0], fetch), dtype=np.int64)
        out_val = np.empty((users.shape[0], fetch), dtype=np.float32)
        for block in _row_blocks(users.shape[0], self.num_rows, self._max_block_bytes):
            scores = users[block] @ self._items_t
            scores[:, 0] = -np.inf
            if fetch < self.num_rows:
                idx = np.argpartition(scores, self.num_rows - fetch, axis=1)[:, -fetch:]
            else:
                idx = np.broadcast_to(np.arange(self.num_rows), scores.shape)
            out_idx[block] = idx
            out_val[block] = np.take_along_axis(scores, idx, axis=1)
        return out_idx, out_val


def scoring_graph(item_embeddings: np.ndarray, fp16: bool = False) -> onnx.ModelProto:
    """user [B, D] float32, k int64 [1] -> scores float32 [B, k], indices int64 [B, k] (sorted)."""
    dtype = np.float16 if fp16 else np.float32
    onnx_type = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    items_t = numpy_helper.from_array(np.ascontiguousarray(item_embeddings.T, dtype=dtype), "items_t")
    bias = np.zeros(item_embeddings.shape[0], dtype=dtype)
    bias[0] = -np.inf  # padding row: static, never a candidate
    nodes = []
    user = "user"
    if fp16:
        nodes.append(helper.make_node("Cast", ["user"], ["user_h"], to=onnx_type))
        user = "user_h"
    nodes += [
        helper.make_node("MatMul", [user, "items_t"], ["raw"]),
        helper.make_node("Add", ["raw", "bias"], ["biased"]),
        helper.make_node("TopK", ["biased", "k"], ["top_raw" if fp16 else "scores", "indices"],
                         axis=-1, largest=1, sorted=1),
    ]
    if fp16:
        nodes.append(helper.make_node("Cast", ["top_raw"], ["scores"], to=TensorProto.FLOAT))
    dim = item_embeddings.shape[1]
    graph = helper.make_graph(
        nodes, "shopstream_scoring",
        [helper.make_tensor_value_info("user", TensorProto.FLOAT, ["batch", dim]),
         helper.make_tensor_value_info("k", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "k_out"]),
         helper.make_tensor_value_info("indices", TensorProto.INT64, ["batch", "k_out"])],
        initializer=[items_t, numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


class OnnxExact:
    """The scoring graph on tuned sessions: on the CPU a single-threaded one too, for calls
    of at most ``small_work_cells`` scores (batch x catalog), where handing work to the
    intra-op pool costs more than it saves (the encoder's sessions are single-threaded too).
    Measured on the 2-core box: batch 1 x 12K items 50 µs on one thread vs 58 µs on two,
    batch 1 x 100K 590 µs vs 420 µs."""

    name = "exact-onnx"
    exhaustive = True

    def __init__(self, item_embeddings: np.ndarray, providers: tuple[str, ...], *, fp16: bool = False,
                 intra_op_threads: int = 0, max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES,
                 small_work_cells: int = 1 << 16) -> None:
        self.num_rows = item_embeddings.shape[0]
        # Sessions are built from a file, not from the serialised bytes: onnxruntime's Python
        # InferenceSession keeps the bytes it was given for as long as it lives, which would
        # hold one more copy of the catalog per loaded model (bench/models_memory.py).
        with tempfile.TemporaryDirectory(prefix="shopstream-scoring-") as tmp:
            model = Path(tmp) / "scoring.onnx"
            model.write_bytes(scoring_graph(item_embeddings, fp16).SerializeToString())
            self.session = make_session(model, providers, intra_op_threads=intra_op_threads)
            self.small = (single_threaded_twin(model, providers, self.session, intra_op_threads)
                          if self.num_rows <= small_work_cells else self.session)
        self._small_rows = small_work_cells // self.num_rows
        # Each session holds its own copy of the graph's initializers (the catalog, the bias).
        initializers = item_embeddings.size * (2 if fp16 else 4) + self.num_rows * (2 if fp16 else 4)
        self.array_bytes = 0
        self.session_bytes = initializers * (1 if self.small is self.session else 2)
        self._max_block_bytes = max_block_bytes

    def candidates(self, users: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        fetch = min(fetch, self.num_rows)
        k = np.array([fetch], dtype=np.int64)
        session = self.small if users.shape[0] <= self._small_rows else self.session
        parts = [session.run(["indices", "scores"], {"user": np.ascontiguousarray(users[b]), "k": k})
                 for b in _row_blocks(users.shape[0], self.num_rows, self._max_block_bytes)]
        if len(parts) == 1:
            return parts[0][0], parts[0][1]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
