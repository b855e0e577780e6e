"""An exponential moving average of a model's weights, evaluated and kept instead of the raw ones.

With dropout 0.5 and Adam the raw weights after any one step are a noisy sample around
where training is heading; their average over the last ~1,000 steps generalises better
and makes the validation curve (which picks the checkpoint) smoother.

The average is torch's ``AveragedModel`` (a copy of the model: validate and export that
copy, the raw model keeps training) updated by torch's EMA function. Only parameters are
averaged; the copy's buffers (such as the item → attribute table) follow the model's.
The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (as in
TensorFlow's ``ExponentialMovingAverage(num_updates=...)``), so a small dataset with a
few dozen steps per epoch is not averaged over many epochs of stale weights.
"""
from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def warmed_up_decay(decay: float, updates: int) -> float:
    """The decay of the update that follows ``updates`` earlier ones."""
    return min(decay, (1 + updates) / (10 + updates))


def weight_average(model: torch.nn.Module, decay: float) -> AveragedModel:
    """The EMA of ``model``'s weights: ``update_parameters(model)`` after each optimizer
    step; ``.module`` is the averaged model. It starts from the weights ``model`` has now."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"EMA decay must be in [0, 1), got {decay}")

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        # num_averaged counts the starting weights too (the first update_parameters copies).
        get_ema_multi_avg_fn(warmed_up_decay(decay, int(num_averaged) - 1))(averaged, current, num_averaged)

    average = AveragedModel(model, multi_avg_fn=update)
    average.update_parameters(model)  # the starting point: a copy of the current weights
    return average
