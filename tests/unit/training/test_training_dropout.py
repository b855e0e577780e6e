import pytest
import torch

from services.training.dropout import Dropout, seed_masks


def test_keeps_about_one_minus_p_and_preserves_the_expectation():
    seed_masks(0)
    drop = Dropout(0.5).train()
    x = torch.ones(400, 500)
    out = drop(x)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.5) < 0.01
    assert torch.allclose(out[kept], torch.full_like(out[kept], 2.0))
    assert abs(out.mean().item() - 1.0) < 0.02


def test_p_is_quantised_to_256ths_and_scaled_by_the_actual_keep_rate():
    drop = Dropout(0.2)
    assert drop.threshold == 51
    assert drop.scale == pytest.approx(256 / 205)
    seed_masks(1)
    out = drop.train()(torch.ones(1000, 1000))
    assert abs(out.mean().item() - 1.0) < 0.01


def test_eval_mode_and_p_zero_are_the_identity():
    x = torch.randn(3, 4, 5)
    assert Dropout(0.5).eval()(x) is x
    assert Dropout(0.0).train()(x) is x


def test_seeded_masks_repeat_and_gradients_flow_through_kept_values_only():
    drop = Dropout(0.3).train()
    seed_masks(7)
    first = drop(torch.ones(64, 64))
    seed_masks(7)
    x = torch.ones(64, 64, requires_grad=True)
    second = drop(x)
    assert torch.equal(first, second)
    second.sum().backward()
    assert torch.equal(x.grad != 0, second != 0)


def test_rejects_a_probability_outside_0_1():
    with pytest.raises(ValueError):
        Dropout(1.0)
