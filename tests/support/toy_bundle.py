"""A tiny, deterministic model bundle built without torch, for tests and local demos.

The encoder sums the embeddings of the history items (padding row 0 is zero),
so the user vector and every score are known in advance.
Run ``python -m support.toy_bundle MODELS_DIR`` to publish one.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from services.common.bundle.encoding import INPUT_NAME, OUTPUT_NAME
from services.common.bundle.files import write_bundle


def sum_encoder(item_embeddings: np.ndarray) -> onnx.ModelProto:
    """item_seq int64 [B, L] -> user_emb float32 [B, D] = sum of the rows gathered."""
    table = numpy_helper.from_array(np.asarray(item_embeddings, dtype=np.float32), "table")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", INPUT_NAME], ["gathered"], axis=0),
            helper.make_node("ReduceSum", ["gathered", "axes"], [OUTPUT_NAME], keepdims=0),
        ],
        "toy_sum_encoder",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", item_embeddings.shape[1]])],
        initializer=[table, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def publish_toy_bundle(
    models_dir: str | Path,
    item_ids: Sequence[str],
    item_vectors: np.ndarray,
    max_len: int = 20,
    note: str = "toy",
    attribute_vectors: dict[str, np.ndarray] | None = None,
    *,
    live: bool = True,
) -> str:
    """Write a bundle whose item i (1-based) has ``item_vectors[i-1]``; returns its version.

    ``live=False`` leaves LATEST alone (a candidate bundle).

    ``attribute_vectors`` (attribute id → vector) makes a bundle that can embed new items.
    """
    vectors = np.asarray(item_vectors, dtype=np.float32)
    embeddings = np.vstack([np.zeros((1, vectors.shape[1]), dtype=np.float32), vectors])
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "encoder.onnx"
        onnx.save(sum_encoder(embeddings), onnx_path)
        # The note goes into the ONNX doc string so that two toy bundles differ in
        # their encoder hash, hence in their version names.
        model = onnx.load(onnx_path)
        model.doc_string = f"{note} {np.random.default_rng().integers(1 << 62)}"
        onnx.save(model, onnx_path)
        attributes = None
        if attribute_vectors:
            ids = list(attribute_vectors)
            table = np.vstack([np.zeros((1, vectors.shape[1])), *[attribute_vectors[a] for a in ids]])
            attributes = (ids, table.astype(np.float32))
        version, _ = write_bundle(models_dir, onnx_path, embeddings, list(item_ids),
                                  {"max_len": max_len, "trainer": "toy", "note": note}, attributes=attributes,
                                  live=live)
    return version


if __name__ == "__main__":  # pragma: no cover - manual demo helper
    rng = np.random.default_rng(0)
    ids = [f"item-{i}" for i in range(100)]
    print(publish_toy_bundle(sys.argv[1], ids, rng.normal(size=(100, 8))))
