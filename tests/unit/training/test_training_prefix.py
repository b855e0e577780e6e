"""Prefix training (last position of every prefix) and the bidirectional filter it allows."""
import numpy as np
import pytest
import torch

from services.training.data import PrefixBatches, split_leave_one_out
from services.training.model import ModelConfig, SASRec
from services.training.train import TrainConfig, train


def make_model(**kw) -> SASRec:
    torch.manual_seed(0)
    model = SASRec(ModelConfig(num_items=30, max_len=8, dim=16, num_heads=2, ffn_dim=32, filter_mix=0.5,
                               **kw)).eval()
    with torch.no_grad():  # beta starts at 1, where the filter is the identity: make it filter
        for block in model.blocks:
            block.filter.beta.fill_(0.3)
    return model


def test_prefix_batches_give_every_prefix_once_with_only_the_last_target():
    batches = PrefixBatches([np.array([1, 2, 3]), np.array([4, 5]), np.array([6])], max_len=5, batch_size=8)
    (inputs, targets), = list(batches.epoch(np.random.default_rng(0)))
    rows = sorted((tuple(i.tolist()), tuple(t.tolist())) for i, t in zip(inputs, targets))
    assert inputs.shape == (3, 2)  # prefixes [1], [1, 2], [4]; cropped to the longest
    assert rows == [((0, 1), (0, 2)), ((0, 4), (0, 5)), ((1, 2), (0, 3))]


def test_prefix_batches_keep_the_last_max_len_items_of_long_prefixes():
    batches = PrefixBatches([np.arange(1, 12)], max_len=4, batch_size=64)
    inputs, targets = next(batches.epoch(np.random.default_rng(0)))
    assert len(inputs) == 10 and inputs.shape[1] == 4
    by_target = {int(t[-1]): i.tolist() for i, t in zip(inputs, targets)}
    assert by_target[11] == [7, 8, 9, 10] and by_target[3] == [0, 0, 1, 2]


def test_bidirectional_filter_sees_later_items_but_not_padding():
    model = make_model(filter_bidirectional=True)
    seq = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    changed = seq.clone()
    changed[0, 6:] = torch.tensor([20, 21])
    a, b = model.hidden(seq), model.hidden(changed)
    assert not torch.allclose(a[0, 2:6], b[0, 2:6], atol=1e-4)  # earlier positions see later items
    assert torch.allclose(model(seq), model(seq[:, -6:]), atol=1e-6)  # padding cropped: same user vector
    other_pad = seq.clone()
    other_pad[0, :2] = 0
    assert torch.allclose(model(seq), model(other_pad), atol=1e-6)
    assert torch.isfinite(model(torch.zeros(1, 8, dtype=torch.long))).all()


def test_a_bidirectional_filter_refuses_all_position_training():
    items = [str(i) for i in range(1, 31)]
    split = split_leave_one_out({"u1": ["1", "2", "3", "4", "5"], "u2": ["2", "3", "4", "5", "6"]}, items)
    model = make_model(filter_bidirectional=True)
    with pytest.raises(ValueError, match="needs prefix training"):
        train(model, split, TrainConfig(prefix_training=False, max_epochs=1))
