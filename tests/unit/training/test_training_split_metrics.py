"""Leave-one-out split, batching and metric math on hand-made data."""
import math

import numpy as np
import pytest
import torch

from services.training.data import TrainBatches, build_vocab, pad_left, split_leave_one_out
from services.training.evaluate import evaluate_popularity, metrics_from_ranks, target_ranks


def test_vocab_is_numeric_when_ids_are_integers():
    assert build_vocab({"u": ["10", "2", "1"]}) == ["1", "2", "10"]
    assert build_vocab({"u": ["b", "a"]}) == ["a", "b"]


def test_split_leaves_last_two_out_and_keeps_short_users_for_training():
    seqs = {"u1": ["1", "2", "3", "4"], "u2": ["2", "3", "1"], "u3": ["4", "1"]}
    split = split_leave_one_out(seqs, ["1", "2", "3", "4"])
    assert [s.tolist() for s in split.train] == [[1, 2], [2], [4, 1]]
    assert split.valid_target.tolist() == [3, 3]
    assert split.test_target.tolist() == [4, 1]
    assert [h.tolist() for h in split.valid_history()] == [[1, 2], [2]]
    assert [h.tolist() for h in split.test_history()] == [[1, 2, 3], [2, 3]]
    assert split.train_counts().tolist() == [0, 2, 2, 0, 1]


def test_pad_left_keeps_the_last_items():
    out = pad_left([np.array([1, 2, 3, 4]), np.array([5]), np.array([], dtype=np.int64)], 3)
    assert out.tolist() == [[2, 3, 4], [0, 0, 5], [0, 0, 0]]


def test_train_batches_shift_targets_and_crop_to_longest():
    batches = TrainBatches([np.array([1, 2, 3]), np.array([4, 5]), np.array([6])], max_len=5,
                           batch_size=8)
    (inputs, targets), = list(batches.epoch(np.random.default_rng(0)))
    rows = {tuple(i.tolist()): t.tolist() for i, t in zip(inputs, targets)}
    assert inputs.shape == (2, 2)  # user with one item gives no example; width = 2
    assert rows == {(1, 2): [2, 3], (0, 4): [0, 5]}


def test_target_rank_excludes_history_and_counts_only_strictly_greater():
    #                        pad  1    2    3    4    5
    scores = torch.tensor([[9.0, 5.0, 7.0, 3.0, 5.0, 6.0]])
    # Target 4 (score 5): item 1 ties (not counted), item 2 is in history (excluded),
    # item 5 is greater -> rank 1. Padding column 0 is never counted.
    rank = target_ranks(scores, torch.tensor([4]), torch.tensor([[0, 2]]))
    assert rank.tolist() == [1]
    # The target itself in the history is still ranked.
    assert target_ranks(scores, torch.tensor([5]), torch.tensor([[5, 2]])).tolist() == [0]
    assert target_ranks(scores, torch.tensor([3]), torch.tensor([[0, 0]])).tolist() == [4]


def test_metrics_from_ranks():
    m = metrics_from_ranks(np.array([0, 3, 15, 40]))
    assert m["users"] == 4
    assert m["hr@10"] == pytest.approx(2 / 4)
    assert m["hr@20"] == pytest.approx(3 / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(5)) / 4)
    assert m["ndcg@20"] == pytest.approx((1 + 1 / math.log2(5) + 1 / math.log2(17)) / 4)


def test_poprec_uses_train_counts():
    # Item 1 is the most popular in training; both test targets are item 1.
    seqs = {"a": ["1", "2", "3", "1"], "b": ["1", "3", "2", "1"], "c": ["1", "2", "1", "1"]}
    split = split_leave_one_out(seqs, ["1", "2", "3"])
    # Test histories hold item 1 but the target itself is never excluded -> rank 0.
    assert evaluate_popularity(split, "test")["hr@10"] == pytest.approx(1.0)
    assert evaluate_popularity(split, "test")["ndcg@10"] == pytest.approx(1.0)
