"""The first trending list: the training data's popularity, scaled to a few events' weight."""
from __future__ import annotations

from services.stack.popularity import SEED_TOP_WEIGHT, popularity, seed_scores


def test_popularity_counts_every_interaction_most_popular_first():
    sequences = {"u1": ["b", "a", "a"], "u2": ["c", "a", "b"], "u3": ["10", "9"]}
    assert popularity(sequences) == [("a", 3), ("b", 2), ("10", 1), ("9", 1), ("c", 1)]


def test_seed_scores_keep_the_order_and_proportions():
    scores = seed_scores([("a", 40), ("b", 20), ("c", 10), ("d", 0)], limit=3)
    assert scores == [("a", SEED_TOP_WEIGHT), ("b", SEED_TOP_WEIGHT / 2), ("c", SEED_TOP_WEIGHT / 4)]
    assert seed_scores([]) == []
