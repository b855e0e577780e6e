"""Encoder: cropping, length buckets and the small-batch session change the work, never a vector."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from services.common.model_bundle import ENCODER_FILE, INPUT_NAME, OUTPUT_NAME, load_bundle
from services.ranker.encoding import Encoder
from support.toy_bundle import publish_toy_bundle

N, DIM, MAX_LEN = 300, 8, 20
IDS = [f"i{n}" for n in range(N)]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    path = tmp_path_factory.mktemp("bundles")
    version = publish_toy_bundle(path, IDS, np.random.default_rng(0).normal(size=(N, DIM)), max_len=MAX_LEN)
    return load_bundle(path, version, prefer_gpu=False)


def histories(count: int, seed: int) -> list[list[str]]:
    """Lengths from 0 to 2 * MAX_LEN (longer ones are truncated), with some unknown ids."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        items = [IDS[i] for i in rng.integers(0, N, int(rng.integers(0, 2 * MAX_LEN)))]
        if rng.random() < 0.2:
            items.insert(int(rng.integers(0, len(items) + 1)), "not-in-vocab")
        out.append(items)
    return out


def padded_reference(bundle, hist) -> np.ndarray:
    (emb,) = bundle.session.run([OUTPUT_NAME], {INPUT_NAME: bundle.to_indices(hist)})
    return emb


class Recording(Encoder):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, tuple[int, int]]] = []

    def _run(self, session, indices):
        self.calls.append(("small" if session is self.small else "large", indices.shape))
        return super()._run(session, indices)


@pytest.mark.parametrize("count", [1, 3, 5, 31, 32, 47, 100])
def test_vectors_equal_the_padded_max_len_call_whatever_the_batch(bundle, count):
    encoder = Recording(bundle.path / ENCODER_FILE, ("CPUExecutionProvider",), intra_op_threads=2,
                        small_batch_max=4, bucket_rows=16)
    hist = histories(count, seed=count)
    got = encoder.encode(bundle, hist)
    np.testing.assert_allclose(got, padded_reference(bundle, hist), rtol=1e-5, atol=1e-5)
    assert sum(shape[0] for _, shape in encoder.calls) == count
    longest = max(len(r) for r in bundle.index_rows(hist))
    assert all(shape[1] <= max(1, longest) for _, shape in encoder.calls)  # never wider than needed
    assert {kind for kind, _ in encoder.calls} == {"small" if count <= 4 else "large"}
    if count >= 32:  # bucketed: several calls, each no wider than its own rows, no runt chunk
        assert len(encoder.calls) == count // 16 + (count % 16 >= 8)
        assert min(shape[0] for _, shape in encoder.calls) >= 8


def test_empty_batch_and_all_unknown_histories(bundle):
    encoder = Encoder(bundle.path / ENCODER_FILE, ("CPUExecutionProvider",), intra_op_threads=1)
    assert encoder.encode(bundle, []).shape == (0, DIM)
    out = encoder.encode(bundle, [["nope"], []])
    np.testing.assert_array_equal(out, np.zeros((2, DIM), dtype=np.float32))  # the sum of padding rows


def test_a_fixed_length_encoder_still_gets_max_len_columns(bundle, tmp_path):
    model = onnx.load(bundle.path / ENCODER_FILE)
    seq = model.graph.input[0].type.tensor_type.shape.dim[1]
    seq.Clear()
    seq.dim_value = MAX_LEN  # what bundles exported before the dynamic sequence axis look like
    path = tmp_path / "fixed.onnx"
    onnx.save(model, path)
    encoder = Recording(path, ("CPUExecutionProvider",), intra_op_threads=1)
    assert not encoder.variable_length
    hist = histories(40, seed=7)
    np.testing.assert_allclose(encoder.encode(bundle, hist), padded_reference(bundle, hist), rtol=1e-5, atol=1e-5)
    assert [shape for _, shape in encoder.calls] == [(40, MAX_LEN)]
