import numpy as np
import pytest
import torch

from services.training import train as train_module
from services.training.averaging import warmed_up_decay, weight_average
from services.training.data import split_leave_one_out
from services.training.model import ModelConfig, SASRec
from services.training.train import TrainConfig, seed_everything, train


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    model.register_buffer("table", torch.arange(6.0))
    return model


def test_update_is_the_warmed_up_exponential_average_of_the_weights():
    model = _model()
    average = weight_average(model, decay=0.9)
    weight = model[0].weight
    expected = weight.detach().clone()
    for step in range(30):
        with torch.no_grad():
            weight.add_(1.0)
        decay = min(0.9, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * weight.detach()
        average.update_parameters(model)
    assert int(average.n_averaged) == 31  # the starting weights and 30 updates
    assert warmed_up_decay(0.9, 30) == pytest.approx(min(0.9, 31 / 40))
    assert torch.allclose(average.module[0].weight, expected, atol=1e-5)


def test_the_average_is_a_copy_whose_buffers_follow_the_model():
    model = _model()
    average = weight_average(model, decay=0.99)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
        model.table.add_(1.0)
    average.update_parameters(model)  # decay 0.1 at the first update: 0.1 · old + 0.9 · new
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    averaged = average.module.state_dict()
    for name in ("0.weight", "0.bias", "1.weight"):
        assert torch.allclose(averaged[name], 0.1 * before[name] + 0.9 * raw[name], atol=1e-6)
    assert torch.equal(averaged["table"], raw["table"])  # buffers are copied, not averaged
    average.module(torch.ones(2, 4)).sum().backward()  # using the average leaves the model alone
    for name, value in model.state_dict().items():
        assert torch.equal(value, raw[name])


@pytest.mark.parametrize("decay", [1.0, -0.1, 1.5])
def test_decay_out_of_range_is_rejected(decay):
    with pytest.raises(ValueError, match="decay"):
        weight_average(_model(), decay=decay)


def _tiny_split():
    rng = np.random.default_rng(0)
    seqs = {f"u{u}": [f"i{(s + 2 * k) % 30}" for k in range(int(rng.integers(4, 9)))]
            for u, s in enumerate(rng.integers(0, 30, 60))}
    return split_leave_one_out(seqs, sorted({i for seq in seqs.values() for i in seq}))


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_training_validates_and_keeps_the_averaged_weights(monkeypatch, ema_decay):
    split = _tiny_split()
    seed_everything(0, 1)
    model = SASRec(ModelConfig(num_items=split.num_items, max_len=6, dim=8, ffn_dim=16))
    validated = []

    def evaluate(scored, split, stage):
        validated.append((scored, {k: v.clone() for k, v in scored.state_dict().items()},
                          {k: v.clone() for k, v in model.state_dict().items()}))
        return {"ndcg@10": float(len(validated) == 1), "users": 1.0}  # the first epoch is the best

    monkeypatch.setattr(train_module, "evaluate_model", evaluate)
    result = train(model, split, TrainConfig(max_epochs=2, batch_size=8, threads=1, ema_decay=ema_decay))
    assert result.best_epoch == 1 and len(validated) == 2
    (scored, scored_state, raw_state), _ = validated
    assert (scored is model) == (ema_decay == 0)
    if ema_decay:  # the average is not the raw weights, and it is what the model keeps
        assert not torch.equal(scored_state["item_emb.weight"], raw_state["item_emb.weight"])
    for name, value in model.state_dict().items():
        assert torch.equal(value, scored_state[name])


def test_training_rejects_a_bad_decay_before_the_first_step():
    split = _tiny_split()
    model = SASRec(ModelConfig(num_items=split.num_items, max_len=6, dim=8, ffn_dim=16))
    with pytest.raises(ValueError, match="decay"):
        train(model, split, TrainConfig(max_epochs=1, ema_decay=1.0, threads=1))
