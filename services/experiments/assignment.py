"""Who sees which variant: a stable hash of (experiment, user id) onto the served weights.

No state and no randomness: every gateway replica, before and after a restart, puts a user
in the same variant for as long as the experiment's served variants and weights stay the
same. The experiment's name is part of the hash, so two experiments split users
independently.
"""
from __future__ import annotations

import hashlib

from services.experiments.definition import Experiment, Variant

_SCALE = float(1 << 64)


def bucket(experiment: str, user_id: str) -> float:
    """A number in [0, 1), uniform over users, fixed for (experiment, user)."""
    digest = hashlib.blake2b(f"{experiment}\x1f{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


class Assigner:
    """The served variants of one experiment, with their cumulative weights precomputed."""

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        served = experiment.served
        total = sum(v.weight or 0.0 for v in served)
        bounds, acc = [], 0.0
        for v in served:
            acc += (v.weight or 0.0) / total
            bounds.append(acc)
        bounds[-1] = 1.0  # no user falls past the end through rounding
        self._variants = served
        self._bounds = bounds

    def assign(self, user_id: str) -> Variant:
        u = bucket(self.experiment.name, user_id)
        for variant, bound in zip(self._variants, self._bounds):
            if u < bound and (variant.weight or 0.0) > 0:
                return variant
        return next(v for v in reversed(self._variants) if (v.weight or 0.0) > 0)


def assign(experiment: Experiment, user_id: str) -> Variant:
    """The served variant ``user_id`` sees in ``experiment`` (for one-off use; the gateway
    keeps an ``Assigner`` per definition)."""
    return Assigner(experiment).assign(user_id)
