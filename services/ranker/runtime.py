"""onnxruntime set-up for serving: providers, tuned session options, the scoring plan.

The plan decides once per loaded model how the catalog is scored:

- a CUDA provider available (and allowed): exact scoring on the GPU, the catalog
  as an fp16 initializer of an ONNX MatMul + TopK graph, so only [B, K] comes back;
- CPU, catalog below ``ann_min_items``: exact scoring on the CPU (numpy or ONNX,
  ``exact_backend``);
- CPU, larger catalog: the approximate index (ann.py), with exact as the fallback.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import onnxruntime as ort

from services.common.model_bundle import select_providers

CUDA = "CUDAExecutionProvider"

ScorerKind = Literal["auto", "exact", "ann"]
ExactBackend = Literal["numpy", "onnx"]


@dataclass(frozen=True)
class ScoringPlan:
    providers: tuple[str, ...]
    kind: Literal["exact", "ann"]
    backend: Literal["numpy", "onnx"]
    fp16: bool

    @property
    def on_gpu(self) -> bool:
        return self.providers[0] == CUDA

    def describe(self) -> str:
        device = "cuda" if self.on_gpu else "cpu"
        return f"{self.kind}-{self.backend}-{device}{'-fp16' if self.fp16 else ''}"


def plan_scoring(num_items: int, *, prefer_gpu: bool, scorer: ScorerKind = "auto",
                 exact_backend: ExactBackend = "onnx", ann_min_items: int = 500_000) -> ScoringPlan:
    """How to score a catalog of ``num_items`` on this machine (see the module docstring)."""
    providers = tuple(select_providers(prefer_gpu))
    if providers[0] == CUDA:
        if scorer == "ann":  # an explicit choice wins, even on a GPU
            return ScoringPlan(providers, "ann", "numpy", False)
        return ScoringPlan(providers, "exact", "onnx", True)
    kind = scorer if scorer != "auto" else ("ann" if num_items >= ann_min_items else "exact")
    return ScoringPlan(providers, kind, exact_backend, False)


def resolve_threads(intra_op_threads: int) -> int:
    """A thread count as the settings give it: 0 means every core."""
    return intra_op_threads or (os.cpu_count() or 1)


def session_options(intra_op_threads: int = 0, allow_spinning: bool = False) -> ort.SessionOptions:
    """Full graph optimisation, one inter-op thread (the graphs are sequential chains).

    Spinning is off by default: its idle threads keep burning the cores that the
    event loop, gRPC and the BLAS/faiss threads need; measured on the 2-core box
    under load, batch-64 encoding took 40 ms spinning vs 20 ms not
    (``SHOPSTREAM_RANKER_ORT_SPINNING=true`` turns it back on for dedicated hosts).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = resolve_threads(intra_op_threads)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    return options


def make_session(model: str | os.PathLike[str] | bytes, providers: tuple[str, ...], *,
                 intra_op_threads: int = 0, allow_spinning: bool = False) -> ort.InferenceSession:
    """A tuned session on the planned providers (a path or serialised ModelProto)."""
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=session_options(intra_op_threads, allow_spinning),
                                providers=list(providers))


def single_threaded_twin(model: str | os.PathLike[str] | bytes, providers: tuple[str, ...],
                         session: ort.InferenceSession, intra_op_threads: int = 0) -> ort.InferenceSession:
    """A one-thread session of ``session``'s model, for small calls on the CPU (there the
    intra-op pool's hand-offs cost more than they save); ``session`` itself on CUDA or
    where it has one thread already."""
    if session.get_providers()[0] == CUDA or resolve_threads(intra_op_threads) <= 1:
        return session
    return make_session(model, providers, intra_op_threads=1)


@dataclass(frozen=True)
class ScoringConfig:
    """The scoring knobs of RankerSettings, as the model holder needs them."""

    prefer_gpu: bool = True
    intra_op_threads: int = 0
    allow_spinning: bool = False
    scorer: ScorerKind = "auto"
    exact_backend: ExactBackend = "onnx"
    ann_min_items: int = 500_000
    ann_nlist: int = 0
    ann_nprobe: int = 0
    ann_target_recall: float = 0.95

    def plan(self, num_items: int) -> ScoringPlan:
        return plan_scoring(num_items, prefer_gpu=self.prefer_gpu, scorer=self.scorer,
                            exact_backend=self.exact_backend, ann_min_items=self.ann_min_items)


def build_scorer(plan: ScoringPlan, item_embeddings, config: ScoringConfig):
    """The planned scorer over ``item_embeddings`` [N+1, D] (candidates(users, fetch))."""
    from services.ranker.exact import NumpyExact, OnnxExact

    if plan.kind == "ann":
        from services.ranker.ann import IvfIndex

        return IvfIndex(item_embeddings, nlist=config.ann_nlist, nprobe=config.ann_nprobe,
                        target_recall=config.ann_target_recall, threads=config.intra_op_threads)
    if plan.backend == "onnx":
        return OnnxExact(item_embeddings, plan.providers, fp16=plan.fp16, intra_op_threads=config.intra_op_threads)
    return NumpyExact(item_embeddings)
