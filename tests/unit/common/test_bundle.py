"""Provider selection, LATEST handling and atomic publishing of model bundles."""
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from services.common.bundle import BundleError, latest_version, load_bundle, sessions, write_bundle, write_latest
from services.common.bundle.sessions import select_providers


def test_cuda_first_when_available(monkeypatch):
    monkeypatch.setattr(sessions.ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert select_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers(prefer_gpu=False) == ["CPUExecutionProvider"]


def test_cpu_only_without_cuda(monkeypatch):
    monkeypatch.setattr(sessions.ort, "get_available_providers",
                        lambda: ["AzureExecutionProvider", "CPUExecutionProvider"])
    assert select_providers() == ["CPUExecutionProvider"]


def tiny_encoder(path, max_len=4, dim=3):
    """An ONNX encoder: user_emb = float(item_seq[:, -dim:]) (the last dim item indices)."""
    starts = helper.make_tensor("starts", TensorProto.INT64, [1], [max_len - dim])
    ends = helper.make_tensor("ends", TensorProto.INT64, [1], [max_len])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        [helper.make_node("Slice", ["item_seq", "starts", "ends", "axes"], ["tail"]),
         helper.make_node("Cast", ["tail"], ["user_emb"], to=TensorProto.FLOAT)],
        "tiny",
        [helper.make_tensor_value_info("item_seq", TensorProto.INT64, ["batch", max_len])],
        [helper.make_tensor_value_info("user_emb", TensorProto.FLOAT, ["batch", dim])],
        initializer=[starts, ends, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def publish(tmp_path, models):
    tiny_encoder(tmp_path / "enc.onnx")
    emb = np.arange(4 * 3, dtype=np.float32).reshape(4, 3)
    emb[0] = 0
    return write_bundle(models, tmp_path / "enc.onnx", emb, ["a", "b", "c"], {"max_len": 4})


def test_latest_absent_then_written(tmp_path):
    models = tmp_path / "models"
    assert latest_version(models) is None
    with pytest.raises(BundleError, match="no model published"):
        load_bundle(models)
    version, path = publish(tmp_path, models)
    assert latest_version(models) == version
    assert (models / "LATEST").read_text().strip() == version
    assert path == models / version
    # No temp dirs or files left behind by the atomic publish.
    assert sorted(p.name for p in models.iterdir()) == sorted(["LATEST", version])
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["version"] == version and meta["num_items"] == 3 and meta["dim"] == 3


def test_load_latest_and_encode(tmp_path):
    models = tmp_path / "models"
    version, _ = publish(tmp_path, models)
    bundle = load_bundle(models, prefer_gpu=False)
    assert bundle.version == version and bundle.index_of == {"a": 1, "b": 2, "c": 3}
    out = bundle.encode([["a", "b", "zzz", "c"], ["c"], []])
    np.testing.assert_array_equal(out, [[1, 2, 3], [0, 0, 3], [0, 0, 0]])
    assert bundle.encode([]).shape == (0, 3)
    assert "CPUExecutionProvider" in bundle.providers


def test_latest_switches_and_explicit_version_still_loads(tmp_path):
    models = tmp_path / "models"
    first, _ = publish(tmp_path, models)
    write_latest(models, "v-other")
    assert latest_version(models) == "v-other"
    assert load_bundle(models, version=first).version == first
    with pytest.raises(BundleError):
        load_bundle(models)  # LATEST points at a version that does not exist


def test_embed_new_items_from_attribute_embeddings(tmp_path):
    tiny_encoder(tmp_path / "enc.onnx")
    emb = np.arange(4 * 3, dtype=np.float32).reshape(4, 3)
    emb[0] = 0
    attr_emb = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 4]], dtype=np.float32)
    models = tmp_path / "models"
    _, path = write_bundle(models, tmp_path / "enc.onnx", emb, ["a", "b", "c"], {"max_len": 4},
                           attributes=(["red", "blue", "brand:x"], attr_emb))
    meta = json.loads((path / "metadata.json").read_text())
    assert {"attribute_vocab.json", "attribute_embeddings.npy"} <= set(meta["files"])
    bundle = load_bundle(models, prefer_gpu=False)
    assert bundle.supports_new_items
    out = bundle.embed_new_items([["red", "brand:x"], ["blue", "blue", "unknown"], ["unknown"], []])
    assert out.dtype == np.float32 and out.shape == (4, 3)
    np.testing.assert_allclose(out, [[0.5, 0, 2], [0, 2, 0], [0, 0, 0], [0, 0, 0]])
    # Checksummed like every other file.
    (path / "attribute_embeddings.npy").write_bytes(b"x")
    with pytest.raises(BundleError, match="checksum mismatch"):
        load_bundle(models)


def test_bundle_without_attributes_cannot_embed_new_items(tmp_path):
    publish(tmp_path, tmp_path / "models")
    bundle = load_bundle(tmp_path / "models", prefer_gpu=False)
    assert not bundle.supports_new_items and bundle.attribute_embeddings is None
    with pytest.raises(BundleError, match="no attribute embeddings"):
        bundle.embed_new_items([["red"]])
