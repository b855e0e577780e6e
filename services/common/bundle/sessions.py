"""onnxruntime sessions: providers and tuned options, one meaning for every thread count.

A thread count of 0 means every core (``resolve_threads``), for every session the
project opens: the encoder of a bundle, the ranker's exact scorer, the export's
parity check.
"""
from __future__ import annotations

import os

import onnxruntime as ort

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def select_providers(prefer_gpu: bool = True) -> list[str]:
    """onnxruntime providers to ask for: CUDA first when this build has it, then CPU."""
    available = ort.get_available_providers()
    providers = []
    if prefer_gpu and CUDA in available:
        providers.append(CUDA)
    providers.append(CPU)
    return providers


def resolve_threads(intra_op_threads: int) -> int:
    """A thread count as the settings give it: 0 means every core."""
    return intra_op_threads or (os.cpu_count() or 1)


def session_options(intra_op_threads: int = 0, allow_spinning: bool = False) -> ort.SessionOptions:
    """Full graph optimisation, one inter-op thread (the graphs are sequential chains).

    Spinning is off by default: its idle threads keep burning the cores that the
    event loop, gRPC and the BLAS/faiss threads need (measured in docs/ranker.md);
    ``SHOPSTREAM_RANKER_ORT_SPINNING=true`` turns it back on for dedicated hosts.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = resolve_threads(intra_op_threads)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    return options


def make_session(model: str | os.PathLike[str] | bytes, providers: tuple[str, ...] | list[str] = (CPU,), *,
                 intra_op_threads: int = 0, allow_spinning: bool = False) -> ort.InferenceSession:
    """A tuned session (a path or a serialised ModelProto) on ``providers``."""
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=session_options(intra_op_threads, allow_spinning),
                                providers=list(providers))


def on_cuda(session: ort.InferenceSession) -> bool:
    """Whether onnxruntime actually runs ``session`` on CUDA."""
    return session.get_providers()[0] == CUDA


def single_threaded_twin(model: str | os.PathLike[str] | bytes, providers: tuple[str, ...],
                         session: ort.InferenceSession, intra_op_threads: int = 0) -> ort.InferenceSession:
    """A one-thread session of ``session``'s model, for small calls on the CPU (there the
    intra-op pool's hand-offs cost more than they save); ``session`` itself on CUDA or
    where it has one thread already."""
    if on_cuda(session) or resolve_threads(intra_op_threads) <= 1:
        return session
    return make_session(model, providers, intra_op_threads=1)
