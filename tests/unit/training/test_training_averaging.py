import pytest
import torch

from services.training.averaging import WeightAverage


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    model.register_buffer("table", torch.arange(6.0))
    return model


def test_update_is_the_warmed_up_exponential_average_of_the_weights():
    model = _model()
    average = WeightAverage(model, decay=0.9)
    weight = model[0].weight
    expected = weight.detach().clone()
    for step in range(30):
        with torch.no_grad():
            weight.add_(1.0)
        decay = min(0.9, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * weight.detach()
        average.update()
    assert average.updates == 30
    assert average.current_decay() == pytest.approx(min(0.9, 31 / 40))
    with average.applied():
        assert torch.allclose(model[0].weight, expected, atol=1e-5)


def test_applied_swaps_the_average_in_and_restores_the_raw_weights_and_buffers_untouched():
    model = _model()
    average = WeightAverage(model, decay=0.99)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    average.update()  # decay 0.1 at the first update: 0.1 · old + 0.9 · new
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    with average.applied():
        inside = model.state_dict()
        for name in ("0.weight", "0.bias", "1.weight"):
            assert torch.allclose(inside[name], 0.1 * before[name] + 0.9 * raw[name], atol=1e-6)
        assert torch.equal(inside["table"], before["table"])
    for name, value in model.state_dict().items():
        assert torch.equal(value, raw[name])


def test_applied_restores_the_weights_when_the_block_raises():
    model = _model()
    average = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        model[0].bias.fill_(7.0)
    with pytest.raises(RuntimeError), average.applied():
        raise RuntimeError("boom")
    assert torch.equal(model[0].bias, torch.full((3,), 7.0))


def test_decay_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(_model(), decay=1.0)
