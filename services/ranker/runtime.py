"""The scoring plan: how a loaded model scores the catalog on this machine.

The plan decides once per loaded model how the catalog is scored:

- a CUDA provider available (and allowed): exact scoring on the GPU, the catalog
  as an fp16 initializer of an ONNX MatMul + TopK graph, so only [B, K] comes back;
- CPU, catalog below ``ann_min_items``: exact scoring on the CPU (numpy or ONNX,
  ``exact_backend``);
- CPU, larger catalog: the approximate index (ann.py), with exact as the fallback.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from services.common.bundle.sessions import CUDA, select_providers

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
