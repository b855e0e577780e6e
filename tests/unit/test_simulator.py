"""The shopper simulator's pure parts: tastes and drift, the position-biased cascade, the log's sums."""
from __future__ import annotations

import random

import pytest

from services.ingest.synthetic import SyntheticConfig, generate
from services.simulator.behaviour import BehaviourConfig, click_probability, examination, look
from services.simulator.journal import Journal, ctr_over_time, summarize
from services.simulator.tastes import Catalog, Taste, TasteConfig, rotate, tastes_of


@pytest.fixture(scope="module")
def dataset():
    return generate(SyntheticConfig(users=60, items=80, categories=6, seed=5))


def test_ground_truth_is_the_generators(dataset):
    again = generate(SyntheticConfig(users=60, items=80, categories=6, seed=5))
    assert again.sequences == dataset.sequences and again.preferences == dataset.preferences
    assert set(dataset.preferences) == set(dataset.sequences)
    assert set(dataset.popularity) == {it["item_id"] for it in dataset.catalog}
    assert max(dataset.popularity.values()) == 1.0
    # Users' sequences mostly stay in the categories drawn for them (stay_in_preferred 0.85).
    category = {it["item_id"]: it["category"] for it in dataset.catalog}
    inside = sum(category[i] in dataset.preferences[u] for u, seq in dataset.sequences.items() for i in seq)
    assert inside / sum(map(len, dataset.sequences.values())) > 0.7


def test_affinity_prefers_liked_categories_and_successors(dataset):
    catalog, cfg = Catalog.from_dataset(dataset), TasteConfig()
    taste = Taste(frozenset({"c00"}))
    liked = [i for i, c in catalog.category.items() if c == "c00"]
    other = [i for i, c in catalog.category.items() if c != "c00"]
    assert min(taste.affinity(catalog, i, None, cfg) for i in liked) >= cfg.popularity_floor
    assert max(taste.affinity(catalog, i, None, cfg) for i in other) <= cfg.off_taste
    succ_of = other[0]
    assert taste.affinity(catalog, catalog.successors[succ_of], succ_of, cfg) >= cfg.successor
    assert taste.affinity(catalog, "not-an-item", None, cfg) == 0.0


def test_drift_rotates_every_preferred_category(dataset):
    catalog = Catalog.from_dataset(dataset)
    for taste in tastes_of(dataset).values():
        moved = taste.drifted(catalog, 3)
        assert len(moved.liked) == len(taste.liked) and not (moved.liked & taste.liked)
    cats = ("a", "b", "c", "d")
    assert rotate(cats, frozenset({"d"}), 1) == frozenset({"a"})


def test_cascade_click_rate_matches_its_probability():
    cfg = BehaviourConfig(eta=1.0)
    affinities = [0.9, 0.1, 0.6, 0.05, 0.8, 0.3, 0.0, 0.5, 0.2, 0.7]
    p = click_probability(affinities, cfg)
    rng = random.Random(1)
    n = 40_000
    outcomes = [look(affinities, rng, cfg) for _ in range(n)]
    clicks = sum(o.clicked is not None for o in outcomes)
    assert abs(clicks / n - p) < 4 * (p * (1 - p) / n) ** 0.5
    # Position bias: the top of the list gets clicked more than an equally liked lower item.
    by_pos = [sum(o.clicked == j for o in outcomes) for j in range(10)]
    assert by_pos[0] > by_pos[4]
    assert all(o.click_probability == p for o in outcomes[:5])
    # Follow-ups only after a click, a purchase only after an add-to-cart.
    assert all(o.clicked is not None or not (o.add_to_cart or o.purchase) for o in outcomes)
    assert all(o.add_to_cart or not o.purchase for o in outcomes)
    assert examination(0, 1.0) == 1.0 and examination(3, 2.0) == 1 / 16


def test_same_seed_same_decisions():
    cfg = BehaviourConfig()
    affinities = [0.5] * 10
    a = [look(affinities, random.Random("3:u1"), cfg) for _ in range(5)]
    b = [look(affinities, random.Random("3:u1"), cfg) for _ in range(5)]
    assert a == b


def test_summary_counts_lists_and_accepted_events():
    journal = Journal(None)
    journal.write("list", t=0.5, user_id="u1", recommendation_id="r1", variant="trending", items=["1", "2"],
                  click_probability=0.25)
    journal.write("list", t=1.5, user_id="u2", recommendation_id="r2", variant="trending", items=["1"],
                  click_probability=0.75)
    journal.write("list", t=2.5, user_id="u1", recommendation_id="r3", variant="v1", items=["3"],
                  click_probability=0.5)
    for kind, rec, value in (("click", "r1", None), ("add_to_cart", "r1", None), ("purchase", "r1", 12.5),
                             ("click", "r3", None)):
        journal.write("event", t=1.0, event_id=f"e-{kind}-{rec}", user_id="u1", item_id="1", type=kind,
                      recommendation_id=rec, position=0, variant="trending" if rec == "r1" else "v1", value=value)
    journal.write("error", t=3.0, call="TrackEvents", user_id="u2", code="UNAVAILABLE", event_ids=["x"])
    s = summarize(journal.records)
    t, v = s.variants["trending"], s.variants["v1"]
    assert (t.impressions, t.clicks, t.add_to_carts, t.purchases, t.users) == (2, 1, 1, 1, 2)
    assert t.revenue == 12.5 and t.ctr == 0.5 and t.expected_ctr == 0.5
    assert (v.impressions, v.clicks, v.expected_ctr) == (1, 1, 0.5)
    assert (s.lists, s.events, s.errors) == (3, 4, 1)
    series = ctr_over_time(journal.records, bucket_s=1.0)
    assert [row["clicks"] for row in series["trending"]] == [1, 0]
    assert series["v1"][0]["expected_ctr"] == 0.5
