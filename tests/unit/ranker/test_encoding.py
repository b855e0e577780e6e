"""Encoder: cropping, length buckets (ModelBundle.encode_rows, shared with the features
worker) and the small-batch session change the work, never a vector."""
from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from services.common.bundle.encoding import INPUT_NAME, OUTPUT_NAME
from services.common.bundle.files import ENCODER_FILE
from services.common.bundle.model import load_bundle
from services.ranker.encoding import Encoder
from support.toy_bundle import publish_toy_bundle

N, DIM, MAX_LEN = 300, 8, 20
IDS = [f"i{n}" for n in range(N)]


@pytest.fixture(scope="module")
def encode_pool():
    with ThreadPoolExecutor(2, thread_name_prefix="ranker-encode") as pool:  # as the ranker's main builds it
        yield pool


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    path = tmp_path_factory.mktemp("bundles")
    version = publish_toy_bundle(path, IDS, np.random.default_rng(0).normal(size=(N, DIM)), max_len=MAX_LEN)
    return load_bundle(path, version, prefer_gpu=False, intra_op_threads=1)  # as the ranker loads it on the CPU


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


class RecordingSession:
    """An onnxruntime session that records the shape of every input it runs."""

    def __init__(self, session, kind: str, calls: list) -> None:
        self._session, self._kind, self._calls = session, kind, calls

    def run(self, outputs, feeds):
        self._calls.append((self._kind, feeds[INPUT_NAME].shape))
        return self._session.run(outputs, feeds)

    def __getattr__(self, name):  # everything else as the real session
        return getattr(self._session, name)


def recording(bundle):
    """``bundle`` on a recording session, and the list of calls it records."""
    calls: list[tuple[str, tuple[int, int]]] = []
    return dataclasses.replace(bundle, session=RecordingSession(bundle.session, "session", calls)), calls


@pytest.mark.parametrize("count", [1, 3, 4, 5, 31, 32, 47, 100])
def test_vectors_equal_the_padded_max_len_call_whatever_the_batch(bundle, encode_pool, count):
    encoder = Encoder(on_cuda=False, intra_op_threads=2, pool=encode_pool, small_batch_max=4, bucket_rows=16)
    assert bundle.session.get_session_options().intra_op_num_threads == 1 and encoder.threads == 2
    recorded, calls = recording(bundle)
    hist = histories(count, seed=count)
    got = encoder.encode(recorded, hist)
    np.testing.assert_allclose(got, padded_reference(bundle, hist), rtol=1e-5, atol=1e-5)
    assert sum(shape[0] for _, shape in calls) == count
    longest = max(len(r) for r in bundle.index_rows(hist))
    assert all(shape[1] <= max(1, longest) for _, shape in calls)  # never wider than needed
    if count <= 4:  # small batches: one call
        assert len(calls) == 1
    else:  # at least one chunk per thread, about 16 rows each, sizes within one row of each other
        assert len(calls) == max(2, -(-count // 16))
        sizes = [shape[0] for _, shape in calls]
        assert max(sizes) - min(sizes) <= 1


def test_chunks_run_concurrently_on_the_encoders_pool(bundle, encode_pool):
    encoder = Encoder(on_cuda=False, intra_op_threads=2, pool=encode_pool)
    threads: set[str] = set()
    session = bundle.session

    both_running = threading.Barrier(2, timeout=30)  # a chunk waits until the other worker runs one too

    class ThreadRecording:
        def run(self, outputs, feeds):
            name = threading.current_thread().name
            if name not in threads:
                threads.add(name)
                both_running.wait()
            return session.run(outputs, feeds)

        def __getattr__(self, name):
            return getattr(session, name)

    encoder.encode(dataclasses.replace(bundle, session=ThreadRecording()), histories(40, seed=1))
    assert len(threads) == 2 and all(name.startswith("ranker-encode") for name in threads)


def test_the_bundle_itself_encodes_in_the_same_buckets(bundle):
    """What the features worker calls: ModelBundle.encode, on the bundle's own session."""
    calls: list = []
    recorded = dataclasses.replace(bundle, session=RecordingSession(bundle.session, "bundle", calls))
    hist = histories(100, seed=3)
    np.testing.assert_allclose(recorded.encode(hist), padded_reference(bundle, hist), rtol=1e-5, atol=1e-5)
    assert len(calls) == 6 and sum(shape[0] for _, shape in calls) == 100


def test_empty_batch_and_all_unknown_histories(bundle):
    encoder = Encoder(on_cuda=False, intra_op_threads=1)
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
    fixed = dataclasses.replace(bundle, session=ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))
    assert not fixed.variable_length
    encoder = Encoder(on_cuda=False, intra_op_threads=1)
    recorded, calls = recording(fixed)
    hist = histories(40, seed=7)
    np.testing.assert_allclose(encoder.encode(recorded, hist), padded_reference(bundle, hist), rtol=1e-5, atol=1e-5)
    assert [shape for _, shape in calls] == [(40, MAX_LEN)]
