"""Full-ranking leave-one-out evaluation (HR/NDCG@10/@20) for the model and PopRec.

Each target is ranked against ALL items. Items in the user's history (everything
before the target) are excluded, except the target itself; index 0 (padding) is
never ranked. Ties count in the target's favour: rank = number of candidate items
with a score strictly greater than the target's (0-based), so HR@K = [rank < K] and
NDCG@K = [rank < K] / log2(rank + 2).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from services.training.data import Split, pad_left
from services.training.model import SASRec

KS = (10, 20)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """0-based ranks of ``targets`` [B] in ``scores`` [B, N+1], excluding ``history`` [B, H].

    ``history`` is left/right padded with 0; column 0 of scores is padding and excluded.
    """
    scores = scores.clone()
    target_score = scores.gather(1, targets.unsqueeze(1))
    scores[:, 0] = -torch.inf
    scores.scatter_(1, history, -torch.inf)  # the target, if in history, is not > itself
    return (scores > target_score).sum(1)


def metrics_from_ranks(ranks: np.ndarray | torch.Tensor) -> dict[str, float]:
    """HR@K and NDCG@K (K in 10, 20) averaged over users, plus the user count."""
    ranks = torch.as_tensor(ranks, dtype=torch.float64)
    out: dict[str, float] = {}
    for k in KS:
        hit = ranks < k
        out[f"hr@{k}"] = hit.double().mean().item() if len(ranks) else 0.0
        ndcg = torch.where(hit, 1.0 / torch.log2(ranks + 2), torch.zeros_like(ranks))
        out[f"ndcg@{k}"] = ndcg.mean().item() if len(ranks) else 0.0
    out["users"] = int(len(ranks))
    return out


def _stage(split: Split, stage: str) -> tuple[list[np.ndarray], np.ndarray]:
    if stage == "valid":
        return split.valid_history(), split.valid_target
    if stage == "test":
        return split.test_history(), split.test_target
    raise ValueError(f"unknown stage {stage!r}")


def _rank_all(
    histories: list[np.ndarray], targets: np.ndarray,
    score_fn: Callable[[slice], torch.Tensor], batch_size: int,
) -> np.ndarray:
    """Ranks of all targets; ``score_fn(rows)`` gives the [rows, N+1] scores of a slice."""
    ranks = []
    for start in range(0, len(targets), batch_size):
        rows = slice(start, start + batch_size)
        hist = histories[rows]
        width = max(1, max(len(h) for h in hist))
        ranks.append(target_ranks(
            score_fn(rows),
            torch.from_numpy(targets[start:start + batch_size]),
            torch.from_numpy(pad_left(hist, width)),
        ))
    return torch.cat(ranks).numpy() if ranks else np.zeros(0, dtype=np.int64)


@torch.no_grad()
def user_embeddings(model: SASRec, histories: list[np.ndarray], batch_size: int = 1024) -> torch.Tensor:
    """Torch user embeddings [B, dim] for index histories (last max_len items each).

    Users are batched by history length and each batch cropped to its longest
    history, which gives the same result as full max_len padding (positions count
    from the end and padding is masked) at a fraction of the cost.
    """
    was_training = model.training
    model.eval()
    max_len = model.cfg.max_len
    lengths = np.array([min(len(h), max_len) for h in histories], dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    out = torch.zeros(len(histories), model.cfg.dim)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        width = max(1, int(lengths[rows].max()))
        batch = torch.from_numpy(pad_left([histories[r] for r in rows], width))
        out[torch.from_numpy(rows)] = model(batch)
    model.train(was_training)
    return out


@torch.no_grad()
def evaluate_model(model: SASRec, split: Split, stage: str, batch_size: int = 1024) -> dict[str, float]:
    """The model's metrics on the ``valid`` or ``test`` stage."""
    histories, targets = _stage(split, stage)
    items = model.output_embeddings()
    users = user_embeddings(model, histories, batch_size)
    return metrics_from_ranks(_rank_all(
        histories, targets, lambda rows: users[rows] @ items.T, batch_size))


def evaluate_popularity(split: Split, stage: str, batch_size: int = 1024) -> dict[str, float]:
    """PopRec: every user gets items scored by their training-set interaction count."""
    histories, targets = _stage(split, stage)
    counts = torch.from_numpy(split.train_counts()).double()
    return metrics_from_ranks(_rank_all(
        histories, targets, lambda rows: counts.expand(len(targets[rows]), -1), batch_size))
