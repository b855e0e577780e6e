"""ANN vs exact on small data, the ONNX scoring graph, and provider / scoring-plan selection."""
import numpy as np
import onnx
import onnxruntime
import pytest

from services.ranker.ann import IvfIndex, exact_top, probe_queries, recall_at_k
from services.ranker.exact import NumpyExact, OnnxExact, scoring_graph
from services.common.bundle.sessions import CUDA, session_options
from services.ranker.runtime import plan_scoring


def items(n=3000, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(30, dim))
    out = np.zeros((n + 1, dim), dtype=np.float32)
    out[1:] = centers[rng.integers(0, 30, n)] + 0.5 * rng.normal(size=(n, dim))
    return out


def test_ann_probing_every_list_is_exact():
    emb = items()
    index = IvfIndex(emb, nlist=20, nprobe=20)
    queries = probe_queries(emb[1:], 50, seed=9)
    got, scores = index.candidates(queries, 10)
    assert recall_at_k(got, exact_top(emb[1:], queries, 10) + 1) == 1.0
    assert 0 not in got
    assert np.allclose(scores, np.take_along_axis(queries @ emb.T, got, axis=1), atol=1e-4)


def test_ann_calibration_reaches_its_target_recall_on_held_out_queries():
    emb = items(seed=1)
    index = IvfIndex(emb, nlist=32, target_recall=0.95)
    assert index.calibrated_recall >= 0.95 and 1 <= index.nprobe <= 32
    queries = probe_queries(emb[1:], 200, seed=77)
    got, _ = index.candidates(queries, 10)
    assert recall_at_k(got, exact_top(emb[1:], queries, 10) + 1) >= 0.9


@pytest.mark.parametrize("make", [lambda e: NumpyExact(e, max_block_bytes=4 * 3001 * 3),
                                  lambda e: OnnxExact(e, ("CPUExecutionProvider",), max_block_bytes=4 * 3001 * 3)])
def test_exact_backends_return_the_true_top_candidates(make):
    emb = items()
    scorer = make(emb)
    users = np.random.default_rng(3).normal(size=(10, 16)).astype(np.float32)  # 10 rows: several blocks
    idx, val = scorer.candidates(users, 25)
    full = users @ emb.T
    full[:, 0] = -np.inf
    for row in range(10):
        assert sorted(val[row].tolist(), reverse=True) == pytest.approx(np.sort(full[row])[::-1][:25].tolist(),
                                                                        abs=1e-4)
        assert 0 not in idx[row]


class CountingSession:
    def __init__(self, session, calls, name):
        self.session, self.calls, self.name = session, calls, name

    def run(self, *args):
        self.calls.append(self.name)
        return self.session.run(*args)


def test_onnx_exact_runs_small_work_on_one_thread_and_agrees_with_the_pool():
    emb = items(n=1000)
    scorer = OnnxExact(emb, ("CPUExecutionProvider",), intra_op_threads=2, small_work_cells=4 * 1001)
    assert scorer.small is not scorer.session
    calls = []
    scorer.small = CountingSession(scorer.small, calls, "small")
    scorer.session = CountingSession(scorer.session, calls, "pool")
    users = np.random.default_rng(5).normal(size=(5, 16)).astype(np.float32)
    one = [scorer.candidates(users[i:i + 1], 12) for i in range(5)]
    batch = scorer.candidates(users, 12)
    assert calls == ["small"] * 5 + ["pool"]
    for i, (idx, val) in enumerate(one):
        assert idx[0].tolist() == batch[0][i].tolist() and np.allclose(val[0], batch[1][i])
    big = OnnxExact(emb, ("CPUExecutionProvider",), intra_op_threads=2, small_work_cells=500)  # below one row
    assert big.small is big.session


def test_fp16_scoring_graph_is_valid_and_casts_back_to_float():
    model = scoring_graph(items(n=50), fp16=True)
    onnx.checker.check_model(model)
    init = {t.name: t for t in model.graph.initializer}
    assert init["items_t"].data_type == onnx.TensorProto.FLOAT16
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_cuda_is_planned_first_with_fp16_exact_scoring_when_available(monkeypatch):
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    plan = plan_scoring(1_000_000, prefer_gpu=True)
    assert plan.providers == (CUDA, "CPUExecutionProvider")
    assert (plan.kind, plan.backend, plan.fp16, plan.on_gpu) == ("exact", "onnx", True, True)
    assert plan.describe() == "exact-onnx-cuda-fp16"
    assert plan_scoring(1_000_000, prefer_gpu=True, scorer="ann").kind == "ann"
    cpu = plan_scoring(1_000_000, prefer_gpu=False)
    assert cpu.providers == ("CPUExecutionProvider",) and cpu.kind == "ann" and not cpu.fp16


def test_cpu_only_plans_exact_below_the_ann_threshold_and_ann_above(monkeypatch):
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert plan_scoring(12_101, prefer_gpu=True).describe() == "exact-onnx-cpu"
    assert plan_scoring(12_101, prefer_gpu=True, exact_backend="numpy").describe() == "exact-numpy-cpu"
    assert plan_scoring(600_000, prefer_gpu=True, ann_min_items=500_000).kind == "ann"
    assert plan_scoring(600_000, prefer_gpu=True, scorer="exact").kind == "exact"


def test_session_options_are_tuned():
    options = session_options(intra_op_threads=2)
    assert options.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_single_threaded_twin_only_where_the_session_has_a_pool_on_the_cpu():
    from services.common.bundle import sessions as runtime

    model = scoring_graph(items(n=20)).SerializeToString()
    cpu = ("CPUExecutionProvider",)
    pooled = runtime.make_session(model, cpu, intra_op_threads=2)
    twin = runtime.single_threaded_twin(model, cpu, pooled, 2)
    assert twin is not pooled and twin.get_session_options().intra_op_num_threads == 1
    single = runtime.make_session(model, cpu, intra_op_threads=1)
    assert runtime.single_threaded_twin(model, cpu, single, 1) is single

    class OnCuda:
        def get_providers(self):
            return [CUDA, "CPUExecutionProvider"]

    on_cuda = OnCuda()
    assert runtime.single_threaded_twin(model, (CUDA,), on_cuda, 8) is on_cuda
