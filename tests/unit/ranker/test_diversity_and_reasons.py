"""Diversity re-ranking (MMR, category cap) and the evidence behind a recommendation."""
import numpy as np

from services.ranker.diversity import intra_list_diversity, rerank
from services.ranker.reasons import Question, evidence, explain, occlude, occluded
from services.ranker.scoring import unit_rows

# Items 1-3 point one way, 4-6 another (index 0 is padding).
VECS = unit_rows(np.array([[0, 0], [1, 0], [0.99, 0.1], [0.98, 0.2], [0, 1], [0.1, 0.99], [0.2, 0.98]],
                          dtype=np.float32))
CATS = np.array([-1, 0, 0, 0, 1, 1, 1])
CANDIDATES = np.array([1, 2, 3, 4, 5, 6])
SCORES = np.array([6, 5, 4, 3, 2, 1], dtype=np.float32)


def test_defaults_keep_the_model_order():
    got, held = rerank(CANDIDATES, SCORES, 4, unit_vectors=VECS)
    assert got.tolist() == [1, 2, 3, 4] and held


def test_mmr_alternates_between_directions_at_high_weight():
    got, _ = rerank(CANDIDATES, SCORES, 3, unit_vectors=VECS, weight=0.7)
    assert got[0] == 1 and got[1] in (4, 5, 6)
    assert intra_list_diversity(VECS, got) > intra_list_diversity(VECS, CANDIDATES[:3]) + 0.3


def test_category_cap_holds_and_fills_when_it_cannot():
    got, held = rerank(CANDIDATES, SCORES, 4, unit_vectors=VECS, categories=CATS, cap=2)
    assert got.tolist() == [1, 2, 4, 5] and held
    got, held = rerank(CANDIDATES, SCORES, 5, unit_vectors=VECS, categories=CATS, cap=2)
    assert len(got) == 5 and not held
    got, held = rerank(CANDIDATES, SCORES, 4, unit_vectors=VECS, weight=0.3, categories=CATS, cap=2)
    assert sorted(np.bincount(CATS[got])) == [2, 2] and held


def test_evidence_is_the_closest_history_item():
    ev = explain(VECS, np.array([1, 5]), np.array([3, 6]))
    assert ev.item.tolist() == [1, 5]
    assert np.all(ev.strength > 0.9)
    assert explain(VECS, np.array([1, 5]), np.array([3]), method="recent").item.tolist() == [5]
    assert explain(VECS, np.array([], dtype=np.int64), np.array([3])).item.tolist() == [0]
    # Weighted by recency, a similar item far back loses to a less similar recent one.
    assert explain(VECS, np.array([4, 1]), np.array([3]), method="recent-cosine").item.tolist() == [1]
    assert explain(VECS, np.array([1] + [4] * 6), np.array([2]), method="recent-cosine").item.tolist() == [4]


def sum_of_rows(rows: list[list[int]]) -> np.ndarray:
    """A toy encoder: the user vector is the sum of the history's item vectors."""
    return np.stack([VECS[r].sum(axis=0) if r else np.zeros(2, np.float32) for r in rows])


def test_occlusion_tries_the_newest_distinct_items():
    tried, rows = occluded(np.array([1, 4, 1, 5, 6]), window=3)
    assert tried.tolist() == [6, 5, 1]
    assert rows == [[1, 4, 1, 5], [1, 4, 1, 6], [4, 5, 6]]


def test_occlusion_cites_the_item_whose_removal_lowers_the_rank_most():
    history = np.array([1, 4])  # one item on each axis
    question = Question(sum_of_rows([history.tolist()])[0], history, np.array([2, 5]), np.array([2, 3, 5, 6]))
    calls = []
    ev = occlude([question, Question(question.user, np.zeros(0, np.int64), np.array([2]), question.pool)],
                 lambda rows: calls.append(rows) or sum_of_rows(rows), VECS)
    assert len(calls) == 1  # one encoder call for the whole batch
    assert ev[0].item.tolist() == [1, 4]  # item 2 leans on item 1's axis, item 5 on item 4's
    assert np.all(ev[0].strength > 0.9)
    assert ev[1].item.tolist() == [0]  # no history: nothing to cite


def test_served_evidence_is_recency_weighted_cosine_unless_a_window_is_set():
    history = np.array([1, 4])
    question = Question(sum_of_rows([history.tolist()])[0], history, np.array([2, 5]), np.array([2, 3, 5, 6]))

    def never(rows):
        raise AssertionError("window 0 encodes nothing")

    assert evidence([question], never, VECS, VECS)[0].item.tolist() == [1, 4]
    assert evidence([question], sum_of_rows, VECS, VECS, window=2)[0].item.tolist() == [1, 4]
