"""An exponential moving average of a model's weights, evaluated and kept instead of the raw ones.

With dropout 0.5 and Adam the raw weights after any one step are a noisy sample around
where training is heading; their average over the last ~1,000 steps generalises better
and makes the validation curve (which picks the checkpoint) smoother. Only parameters
are averaged (buffers such as the item → attribute table are constant).

The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (as in
TensorFlow's ``ExponentialMovingAverage(num_updates=...)``), so a small dataset with a
few dozen steps per epoch is not averaged over many epochs of stale weights.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class WeightAverage:
    """EMA of ``model``'s parameters: ``update()`` after each optimizer step, ``applied()`` to use it."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._average = [p.detach().clone() for p in self._params]

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """average ← decay · average + (1 − decay) · weights, one fused pass over every parameter."""
        weight = 1.0 - self.current_decay()
        self.updates += 1
        torch._foreach_lerp_(self._average, [p.detach() for p in self._params], weight)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block and its own weights again after."""
        with torch.no_grad():
            saved = [p.detach().clone() for p in self._params]
            torch._foreach_copy_(self._params, self._average)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self._params, saved)
