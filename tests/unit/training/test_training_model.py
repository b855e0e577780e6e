"""SASRec shapes, causality, padding and the fused loss."""
import torch
from torch.nn import functional as F

from services.training.model import ModelConfig, SASRec, SoftmaxCrossEntropy


def make_model(**kw) -> SASRec:
    """The causal model (bidirectional filter off), as all-position training needs it."""
    torch.manual_seed(0)
    kw.setdefault("filter_bidirectional", False)
    return SASRec(ModelConfig(num_items=30, max_len=8, dim=16, num_heads=2, ffn_dim=32, **kw)).eval()


def test_forward_shapes():
    model = make_model()
    seq = torch.randint(1, 31, (5, 8))
    assert model(seq).shape == (5, 16)
    assert model.hidden(seq).shape == (5, 8, 16)
    emb = model.output_embeddings()
    assert emb.shape == (31, 16) and torch.all(emb[0] == 0)


def test_future_items_do_not_change_earlier_outputs():
    for norm_first in (True, False):
        model = make_model(norm_first=norm_first)
        seq = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
        changed = seq.clone()
        changed[0, 5:] = torch.tensor([20, 21, 22])
        a, b = model.hidden(seq), model.hidden(changed)
        assert torch.allclose(a[0, :5], b[0, :5], atol=1e-6)
        assert not torch.allclose(a[0, 5:], b[0, 5:], atol=1e-4)


def test_last_position_only_equals_the_full_computation():
    """The user embedding and the prefix-training loss compute the last block at the last
    position only; that must be exactly the full computation's last position."""
    seq = torch.tensor([[0, 0, 0, 4, 9, 2, 7, 1], [3, 5, 8, 13, 21, 2, 6, 9], [0, 0, 0, 0, 0, 0, 0, 11]])
    for kw in ({}, {"filter_bidirectional": True}, {"norm_first": False}, {"filter_mix": 0.0},
               {"num_blocks": 1, "filter_bidirectional": True}):
        model = make_model(**kw)
        full = model.hidden(seq)[:, -1]
        assert torch.allclose(model.hidden(seq, last_only=True)[:, -1], full, atol=1e-6), kw
        assert torch.allclose(model(seq), full, atol=1e-6), kw
        targets = torch.zeros_like(seq)
        targets[:, -1] = torch.tensor([3, 4, 5])
        expected = F.cross_entropy(full @ model.item_table()[1:].T, targets[:, -1] - 1)
        assert torch.allclose(model.loss(seq, targets), expected, atol=1e-5), kw


def test_padding_and_cropping_do_not_change_the_user_embedding():
    model = make_model()
    short = torch.tensor([[0, 0, 0, 0, 0, 4, 9, 2]])
    assert torch.allclose(model(short), model(short[:, -3:]), atol=1e-6)
    # All-padding input stays finite (a query always attends to itself).
    assert torch.isfinite(model(torch.zeros(1, 8, dtype=torch.long))).all()


def test_fused_cross_entropy_matches_autograd():
    torch.manual_seed(0)
    h = torch.randn(7, 5, requires_grad=True)
    w = torch.randn(11, 5, requires_grad=True)
    y = torch.randint(0, 11, (7,))
    loss = SoftmaxCrossEntropy.apply(h, w, y)
    gh, gw = torch.autograd.grad(loss, (h, w))
    ref = F.cross_entropy(h @ w.T, y)
    rh, rw = torch.autograd.grad(ref, (h, w))
    assert torch.allclose(loss, ref, atol=1e-6)
    assert torch.allclose(gh, rh, atol=1e-6) and torch.allclose(gw, rw, atol=1e-6)


def test_loss_ignores_padded_positions():
    model = make_model(dropout=0.0)
    inputs = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 2]])
    targets = torch.tensor([[0, 0, 0, 0, 0, 0, 2, 3]])
    other_pad = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 2]])
    assert torch.isfinite(model.loss(inputs, targets))
    assert torch.allclose(model.loss(inputs, targets), model.loss(other_pad[:, -2:], targets[:, -2:]))


def test_attribute_index_and_attribute_inputs_change_item_inputs():
    from services.training.data import attribute_index

    table, vocab = attribute_index({"a": ["x", "y"], "b": ["y"]}, ["a", "b", "c"])
    assert vocab == ["x", "y"]
    assert table.tolist() == [[0, 0], [1, 2], [2, 0], [0, 0]]
    torch.manual_seed(0)
    cfg = ModelConfig(num_items=3, max_len=4, dim=8, ffn_dim=16, num_attributes=len(vocab))
    model = SASRec(cfg, table).eval()
    seq = torch.tensor([[0, 1, 2, 3]])
    before = model(seq)
    with torch.no_grad():
        model.attr_emb.weight[2] += torch.randn(8)  # attribute "y": items a and b
    assert not torch.allclose(before, model(seq))


def test_fused_cross_entropy_label_smoothing_matches_autograd():
    torch.manual_seed(0)
    h = torch.randn(7, 5, requires_grad=True)
    w = torch.randn(11, 5, requires_grad=True)
    y = torch.randint(0, 11, (7,))
    loss = SoftmaxCrossEntropy.apply(h, w, y, 0.2)
    gh, gw = torch.autograd.grad(loss, (h, w))
    ref = F.cross_entropy(h @ w.T, y, label_smoothing=0.2)
    rh, rw = torch.autograd.grad(ref, (h, w))
    assert torch.allclose(loss, ref, atol=1e-6)
    assert torch.allclose(gh, rh, atol=1e-6) and torch.allclose(gw, rw, atol=1e-6)


def test_causal_filter_keeps_causality_and_padding_invariance():
    for norm_first in (True, False):
        model = make_model(norm_first=norm_first, filter_mix=0.5)
        with torch.no_grad():  # beta starts at 1, where the filter is the identity: make it filter
            for block in model.blocks:
                block.filter.beta.fill_(0.3)
        seq = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
        changed = seq.clone()
        changed[0, 5:] = torch.tensor([20, 21, 22])
        a, b = model.hidden(seq), model.hidden(changed)
        assert torch.allclose(a[0, :5], b[0, :5], atol=1e-6)
        assert torch.allclose(model(seq), model(seq[:, -6:]), atol=1e-6)  # padding cropped


def test_output_attribute_tower_and_attribute_only_embeddings():
    from services.training.data import attribute_index

    table, vocab = attribute_index({"a": ["x", "y"], "b": ["y"]}, ["a", "b", "c"])
    torch.manual_seed(0)
    model = SASRec(ModelConfig(num_items=3, max_len=4, dim=8, ffn_dim=16, num_attributes=len(vocab),
                               id_dropout=0.5), table).eval()
    attr = model.attribute_output_embeddings()
    full = model.output_embeddings()
    assert torch.allclose(full[1], model.out_emb.weight[1] + (attr[1] + attr[2]) / 2)
    only = model.output_embeddings(torch.tensor([False, True, False, True]))
    assert torch.allclose(only[1], (attr[1] + attr[2]) / 2)
    assert torch.allclose(only[3], torch.zeros(8))  # no attributes, no id: nothing to score
    assert torch.allclose(only[2], full[2]) and torch.all(only[0] == 0)
    # id dropout acts only in training
    model.train()
    torch.manual_seed(1)
    dropped = model.item_table(drop_ids=True)
    assert torch.allclose(model.item_table(), model.item_table(drop_ids=False))
    assert not torch.allclose(dropped, model.item_table())
