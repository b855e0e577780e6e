"""How a shopper looks at a served list: a position-biased cascade.

Position ``j`` (0-based) is examined with probability ``1 / (1 + j) ** eta``; an examined
item is clicked with probability ``click_scale * affinity``; the shopper reads top-down
and stops at the first click, so a list gets at most one click and its click
probability is ``1 - prod_j (1 - exam_j * click_j)``: the ground truth its measured CTR
(clicks / served lists) estimates. A click leads to an add-to-cart with probability
``cart_scale * affinity`` and that to a purchase with ``purchase_scale * affinity``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class BehaviourConfig:
    eta: float = 1.0  # examination probability 1 / (1 + position) ** eta
    click_scale: float = 0.6
    cart_scale: float = 0.5
    purchase_scale: float = 0.6


@dataclass(frozen=True)
class Outcome:
    """What the shopper did with one list: the clicked position (None: no click) and the
    follow-up actions on that item."""

    clicked: int | None
    add_to_cart: bool = False
    purchase: bool = False
    click_probability: float = 0.0  # the list's ground-truth probability of a click


def examination(position: int, eta: float) -> float:
    return 1.0 / (1.0 + position) ** eta


def click_probability(affinities: list[float], cfg: BehaviourConfig) -> float:
    """The probability that a list with these true affinities (in served order) gets a click."""
    miss = 1.0
    for j, a in enumerate(affinities):
        miss *= 1.0 - examination(j, cfg.eta) * min(1.0, cfg.click_scale * a)
    return 1.0 - miss


def look(affinities: list[float], rng: random.Random, cfg: BehaviourConfig) -> Outcome:
    """Draw what the shopper does with a list (the draws come from ``rng`` in a fixed order,
    so the same seed and the same list give the same outcome)."""
    p_list = click_probability(affinities, cfg)
    for j, a in enumerate(affinities):
        examined = rng.random() < examination(j, cfg.eta)
        clicked = rng.random() < min(1.0, cfg.click_scale * a)
        if examined and clicked:
            cart = rng.random() < cfg.cart_scale * a
            bought = cart and rng.random() < cfg.purchase_scale * a
            return Outcome(j, cart, bought, p_list)
    return Outcome(None, click_probability=p_list)

