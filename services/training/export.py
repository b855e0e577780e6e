"""ONNX export of the encoder and the ONNX-vs-torch parity check."""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch

from services.common.bundle.encoding import INPUT_NAME, OUTPUT_NAME
from services.common.bundle.sessions import make_session
from services.training.data import pad_left
from services.training.model import SASRec

logger = logging.getLogger(__name__)

OPSET = 17


@dataclass
class Parity:
    users: int
    max_abs_diff: float
    top10_exact_match: float
    top10_mismatched_users: int
    ok: bool

    def as_dict(self) -> dict:
        return asdict(self)


def export_onnx(model: SASRec, path: str | os.PathLike[str]) -> None:
    """Write the encoder (item_seq int64 [batch, seq] -> user_emb float32 [batch, dim]), seq <= max_len.

    The sequence axis is dynamic: the model masks padding and counts positions from the
    end, so the server may crop a batch's all-padding columns (ModelBundle.to_indices).
    """
    model.eval()
    dummy = torch.ones(2, model.cfg.max_len, dtype=torch.int64)
    torch.onnx.export(
        model, (dummy,), str(path),
        dynamo=False,  # the TorchScript exporter needs no onnxscript and handles this graph
        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch", 1: "seq"}, OUTPUT_NAME: {0: "batch"}},
        opset_version=OPSET,
    )


@torch.no_grad()
def check_parity(
    model: SASRec, onnx_path: str | os.PathLike[str], histories: list[np.ndarray],
    atol: float = 1e-4, score_tol: float = 1e-4, cropped_users: int = 200,
) -> Parity:
    """Compare ONNX and torch user embeddings and top-10 items on the given histories.

    Top-10 lists must be identical, except where the swapped items' torch scores are
    within ``score_tol`` of each other (a genuine tie that float noise may reorder).
    The embeddings must also match when the encoder gets each of the first
    ``cropped_users`` histories alone, cropped to its own length (what serving sends).
    """
    model.eval()
    inputs = pad_left(histories, model.cfg.max_len)
    torch_emb = model(torch.from_numpy(inputs)).numpy()
    session = make_session(onnx_path)
    (onnx_emb,) = session.run([OUTPUT_NAME], {INPUT_NAME: inputs})
    items = model.output_embeddings().numpy()
    torch_scores = torch_emb @ items.T
    onnx_scores = onnx_emb @ items.T
    torch_scores[:, 0] = onnx_scores[:, 0] = -np.inf
    top_t = np.argsort(-torch_scores, axis=1, kind="stable")[:, :10]
    top_o = np.argsort(-onnx_scores, axis=1, kind="stable")[:, :10]
    exact = (top_t == top_o).all(axis=1)
    mismatched = 0
    for row in np.flatnonzero(~exact):
        # Same ranking up to ties: the torch scores along both lists must agree.
        gap = np.abs(torch_scores[row, top_t[row]] - torch_scores[row, top_o[row]]).max()
        mismatched += int(gap > score_tol)
    max_diff = float(np.abs(torch_emb - onnx_emb).max()) if len(inputs) else 0.0
    for row in range(min(cropped_users, len(inputs))):
        width = max(1, int(np.count_nonzero(inputs[row])))
        (alone,) = session.run([OUTPUT_NAME], {INPUT_NAME: inputs[row:row + 1, -width:]})
        max_diff = max(max_diff, float(np.abs(alone[0] - torch_emb[row]).max()))
    return Parity(
        users=len(inputs), max_abs_diff=max_diff, top10_exact_match=float(exact.mean()) if len(inputs) else 1.0,
        top10_mismatched_users=mismatched, ok=max_diff <= atol and mismatched == 0,
    )
