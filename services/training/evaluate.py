"""Full-ranking leave-one-out evaluation (HR/NDCG@10/@20) for the model and PopRec.

Each target is ranked against ALL items. Items in the user's history (everything
before the target) are excluded, except the target itself; index 0 (padding) is
never ranked. Ties are broken uniformly at random, in expectation: with g candidates
scoring strictly higher and t others scoring exactly the same as the target, the
target's 0-based rank is uniform on g..g+t, and HR@K / NDCG@K are the exact expected
values over that (deterministic, no sampling). Without ties this is the usual
HR@K = [rank < K], NDCG@K = [rank < K] / log2(rank + 2).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from services.training.data import Split, pad_left
from services.training.model import SASRec

KS = (10, 20)


def target_ranks_and_ties(
    scores: torch.Tensor, targets: torch.Tensor, history: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(#candidates scoring strictly higher, #other candidates tied) for each target.

    ``scores`` [B, N+1], ``targets`` [B], ``history`` [B, H] left/right padded with 0;
    column 0 of scores is padding and never a candidate, nor are history items (the
    target itself stays a candidate even when it is in the history).
    """
    scores = scores.clone()
    target_score = scores.gather(1, targets.unsqueeze(1))
    scores[:, 0] = -torch.inf
    scores.scatter_(1, history, -torch.inf)
    scores.scatter_(1, targets.unsqueeze(1), -torch.inf)  # the target is not its own tie
    return (scores > target_score).sum(1), (scores == target_score).sum(1)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """0-based optimistic ranks (ties in the target's favour); see target_ranks_and_ties."""
    return target_ranks_and_ties(scores, targets, history)[0]


def metrics_from_ranks(
    ranks: np.ndarray | torch.Tensor, ties: np.ndarray | torch.Tensor | None = None
) -> dict[str, float]:
    """HR@K and NDCG@K (K in 10, 20) averaged over users, plus the user count.

    With ``ties`` (other candidates scoring exactly the target's score), each user's
    rank is uniform on ranks..ranks+ties and the metrics are its exact expectation.
    """
    ranks = torch.as_tensor(ranks, dtype=torch.float64)
    ties = torch.zeros_like(ranks) if ties is None else torch.as_tensor(ties, dtype=torch.float64)
    out: dict[str, float] = {}
    for k in KS:
        # gains[r] = sum of 1/log2(j+2) for j < r: the NDCG mass of ranks 0..r-1.
        gains = torch.cat([torch.zeros(1, dtype=torch.float64),
                           torch.cumsum(1.0 / torch.log2(torch.arange(k, dtype=torch.float64) + 2), 0)])
        lo = ranks.clamp(max=k)
        hi = (ranks + ties + 1).clamp(max=k)
        hr = (hi - lo) / (ties + 1)
        ndcg = (gains[hi.long()] - gains[lo.long()]) / (ties + 1)
        out[f"hr@{k}"] = hr.mean().item() if len(ranks) else 0.0
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
) -> tuple[np.ndarray, np.ndarray]:
    """(ranks, ties) of all targets; ``score_fn(rows)`` gives the [rows, N+1] scores of a slice."""
    ranks, ties = [], []
    for start in range(0, len(targets), batch_size):
        rows = slice(start, start + batch_size)
        hist = histories[rows]
        width = max(1, max(len(h) for h in hist))
        r, t = target_ranks_and_ties(
            score_fn(rows),
            torch.from_numpy(targets[start:start + batch_size]),
            torch.from_numpy(pad_left(hist, width)),
        )
        ranks.append(r)
        ties.append(t)
    if not ranks:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return torch.cat(ranks).numpy(), torch.cat(ties).numpy()


def _select(result: tuple[np.ndarray, np.ndarray], users: np.ndarray | None) -> dict[str, float]:
    ranks, ties = result
    if users is not None:
        ranks, ties = ranks[users], ties[users]
    return metrics_from_ranks(ranks, ties)


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
def evaluate_model(
    model: SASRec, split: Split, stage: str, batch_size: int = 1024,
    users: np.ndarray | None = None,
) -> dict[str, float]:
    """The model's metrics on the ``valid`` or ``test`` stage (optionally a subset of users).

    Items hidden from training (``split.hidden``) are scored with their attribute-only
    embedding, as a new catalog item would be at serving time.
    """
    histories, targets = _stage(split, stage)
    items = model.output_embeddings(
        None if split.hidden is None else torch.from_numpy(split.hidden))
    emb = user_embeddings(model, histories, batch_size)
    return _select(_rank_all(histories, targets, lambda rows: emb[rows] @ items.T, batch_size), users)


def evaluate_popularity(
    split: Split, stage: str, batch_size: int = 1024, users: np.ndarray | None = None,
) -> dict[str, float]:
    """PopRec: every user gets items scored by their training-set interaction count."""
    histories, targets = _stage(split, stage)
    counts = torch.from_numpy(split.train_counts()).double()
    return _select(_rank_all(
        histories, targets, lambda rows: counts.expand(len(targets[rows]), -1), batch_size), users)
