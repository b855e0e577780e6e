"""Training step benchmark: ``python -m bench.training [--quick]``.

The trainer's CPU step (SASRec defaults, prefix training, batch 256, full softmax over
a Beauty-sized catalog of 12,101 items, Beauty-like history lengths) with:

1. ``torch_dropout+adam``: ``nn.Dropout`` (torch's CPU generator) and per-tensor Adam;
2. ``numpy_masks+adam``: the trainer's ``Dropout`` (masks from numpy's raw generator);
3. ``numpy_masks+fused_adam``: the trainer's default (and fused Adam).

The three take turns in rounds on the same batches, so machine noise hits all alike.
Prints ms per step and the speed-up over the first; writes bench/results/training.json.
Synthetic data (generated here): runs without ../shared.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from bench.report import table, write
from services.training.data import PrefixBatches
from services.training.dropout import Dropout, seed_masks
from services.training.model import ModelConfig, SASRec
from services.training.train import TrainConfig

BEAUTY_ITEMS = 12_101
USERS = 4_000
THREADS = TrainConfig().threads


def beauty_like_sequences(users: int, items: int, seed: int = 0) -> list[np.ndarray]:
    """Index sequences with Beauty's shape: 5-50 items, mostly short (mean ~9)."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(5 + rng.geometric(1 / 5, users), 50)
    popularity = rng.zipf(1.3, items).astype(np.float64)
    p = popularity / popularity.sum()
    return [rng.choice(items, int(n), p=p) + 1 for n in lengths]


def with_torch_dropout(model: SASRec) -> SASRec:
    """The same model with every trainer Dropout swapped for torch's nn.Dropout."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, Dropout):
                setattr(parent, name, nn.Dropout(child.p))
    return model


VARIANTS = {
    "torch_dropout+adam": (True, False),
    "numpy_masks+adam": (False, False),
    "numpy_masks+fused_adam": (False, True),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps per round")
    args = parser.parse_args(argv)
    steps, rounds = (8, 3) if args.quick else (30, 3)
    torch.set_num_threads(THREADS)
    seed_masks(0)
    cfg = ModelConfig(num_items=BEAUTY_ITEMS)
    batches = PrefixBatches(beauty_like_sequences(USERS, BEAUTY_ITEMS), cfg.max_len, TrainConfig().batch_size)
    plan = list(batches.epoch(np.random.default_rng(0)))[: steps + 2]
    runs = {}
    for name, (torch_dropout, fused) in VARIANTS.items():
        torch.manual_seed(0)
        model = SASRec(cfg)
        if torch_dropout:
            with_torch_dropout(model)
        model.train()
        runs[name] = (model, torch.optim.Adam(model.parameters(), lr=5e-4, fused=fused))
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (model, optimizer) in runs.items():
            for i, (inputs, targets) in enumerate(plan):
                start = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                model.loss(inputs, targets).backward()
                optimizer.step()
                if i >= 2:  # the first steps of a turn warm caches and thread pools
                    times[name].append(time.perf_counter() - start)
    base = float(np.median(times["torch_dropout+adam"]))
    rows = [{"variant": name, "steps": len(t), "ms_per_step_p50": 1e3 * float(np.median(t)),
             "ms_per_step_mean": 1e3 * float(np.mean(t)), "speedup_vs_torch_dropout": base / float(np.median(t))}
            for name, t in times.items()]
    print(f"== training step, batch {TrainConfig().batch_size}, {BEAUTY_ITEMS:,} items, {THREADS} threads, "
          f"{rounds} interleaved rounds")
    print(table(rows, ["variant", "steps", "ms_per_step_p50", "ms_per_step_mean", "speedup_vs_torch_dropout"]))
    path = write("training", {"quick": args.quick, "threads": THREADS, "items": BEAUTY_ITEMS, "rows": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
