"""Tiny train -> export -> publish -> load_bundle -> encode, with parity and checksums."""
import json

import numpy as np
import pytest
import torch

from services.ingest.datasets import write_sequences
from services.common.bundle import BundleError, latest_version, load_bundle
from services.training.cli import main
from services.training.data import build_vocab, pad_left, split_leave_one_out
from services.training.model import ModelConfig, SASRec


def synthetic_sequences(users: int = 120, items: int = 40, seed: int = 0) -> dict[str, list[str]]:
    """Users walk item ids upward in steps of 1-2, so next items are learnable."""
    rng = np.random.default_rng(seed)
    seqs = {}
    for u in range(users):
        start, length = rng.integers(0, items), rng.integers(4, 12)
        seqs[f"user{u}"] = [f"sku-{(start + i * rng.integers(1, 3)) % items}" for i in range(length)]
    return seqs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    data = root / "seqs.txt"
    write_sequences(data, synthetic_sequences())
    models = root / "models"
    report = root / "report.json"
    argv = ["--data", str(data), "--models-dir", str(models), "--report", str(report),
            "--epochs", "3", "--dim", "16", "--max-len", "10", "--batch-size", "32",
            "--parity-users", "50", "--threads", "1"]
    assert main(argv) == 0
    return data, models, json.loads(report.read_text())


def test_publishes_a_verified_bundle_with_metadata(trained):
    data, models, report = trained
    version = latest_version(models)
    assert version == report["version"] and version.startswith("v")
    bundle = load_bundle(models)
    assert bundle.version == version
    assert bundle.max_len == 10 and bundle.dim == 16
    assert bundle.item_embeddings.shape == (len(bundle.item_ids) + 1, 16)
    assert np.all(bundle.item_embeddings[0] == 0)
    meta = bundle.metadata
    assert set(meta["files"]) == {"encoder.onnx", "item_embeddings.npy", "vocab.json"}
    assert meta["onnx_parity"]["ok"] is True
    for stage in ("valid", "test"):
        for model in ("sasrec", "poprec"):
            assert 0.0 <= meta["metrics"][model][stage]["ndcg@10"] <= 1.0
    assert len(meta["dataset"]["sha256"]) == 64
    assert version.endswith(meta["files"]["encoder.onnx"][:8])


def test_bundle_encode_matches_torch(trained, tmp_path):
    from services.common.bundle.files import write_bundle
    from services.training.evaluate import user_embeddings
    from services.training.export import export_onnx
    from services.training.train import TrainConfig, seed_everything, train

    seqs = synthetic_sequences(users=60, seed=1)
    item_ids = build_vocab(seqs)
    split = split_leave_one_out(seqs, item_ids)
    seed_everything(0, 1)
    model = SASRec(ModelConfig(num_items=len(item_ids), max_len=6, dim=16, ffn_dim=32))
    train(model, split, TrainConfig(max_epochs=2, batch_size=16, threads=1))
    export_onnx(model, tmp_path / "enc.onnx")
    write_bundle(tmp_path / "models", tmp_path / "enc.onnx", model.output_embeddings().numpy(),
                 item_ids, {"max_len": 6})
    bundle = load_bundle(tmp_path / "models", prefer_gpu=False)
    assert bundle.providers == ["CPUExecutionProvider"]

    histories = [seqs[u][:-1] for u in list(seqs)[:20]] + [["unknown", "sku-5"], ["sku-7"] * 15]
    emb = bundle.encode(histories)
    assert emb.shape == (22, 16) and emb.dtype == np.float32
    as_indices = [np.array([bundle.index_of[i] for i in h if i in bundle.index_of]) for h in histories]
    expected = user_embeddings(model, as_indices).numpy()
    np.testing.assert_allclose(emb, expected, atol=1e-4)
    top_onnx = np.argsort(-(emb @ bundle.item_embeddings.T)[:, 1:], axis=1)[:, :10]
    top_torch = np.argsort(-(expected @ bundle.item_embeddings.T)[:, 1:], axis=1)[:, :10]
    assert (top_onnx == top_torch).mean() > 0.99

    idx = bundle.to_indices(histories)
    assert idx.shape == (22, 6)
    assert idx[20].tolist() == [0] * 5 + [bundle.index_of["sku-5"]]  # unknown id dropped
    assert (idx[21] == bundle.index_of["sku-7"]).all()  # last max_len kept
    # Batched and one-by-one encoding agree (dynamic batch axis).
    single = np.concatenate([bundle.encode([h]) for h in histories])
    np.testing.assert_allclose(emb, single, atol=1e-5)


def test_onnx_matches_torch_model_trained_in_process(tmp_path):
    from services.training.export import check_parity, export_onnx

    seqs = synthetic_sequences(users=30)
    split = split_leave_one_out(seqs, build_vocab(seqs))
    torch.manual_seed(0)
    model = SASRec(ModelConfig(num_items=split.num_items, max_len=10, dim=16, ffn_dim=32)).eval()
    export_onnx(model, tmp_path / "enc.onnx")
    parity = check_parity(model, tmp_path / "enc.onnx", split.test_history())
    assert parity.ok and parity.max_abs_diff < 1e-4 and parity.top10_mismatched_users == 0
    # And the session numbers equal torch's directly.
    from services.common.bundle.sessions import make_session
    inputs = pad_left(split.test_history(), 10)
    (onnx_emb,) = make_session(tmp_path / "enc.onnx").run(
        ["user_emb"], {"item_seq": inputs})
    np.testing.assert_allclose(onnx_emb, model(torch.from_numpy(inputs)).detach().numpy(), atol=1e-4)


@pytest.mark.parametrize("victim", ["encoder.onnx", "item_embeddings.npy", "vocab.json"])
def test_corrupted_or_missing_file_is_rejected(trained, tmp_path, victim):
    import shutil

    _, models, _ = trained
    copy = tmp_path / "models"
    shutil.copytree(models, copy)
    path = copy / latest_version(copy) / victim
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(BundleError, match="checksum mismatch"):
        load_bundle(copy)
    path.unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(copy)


def test_onnx_parity_with_attribute_inputs(tmp_path):
    from services.training.data import attribute_index
    from services.training.export import check_parity, export_onnx

    seqs = synthetic_sequences(users=30)
    item_ids = build_vocab(seqs)
    split = split_leave_one_out(seqs, item_ids)
    attrs = {item: [f"cat{int(item.split('-')[1]) % 3}", "all"] for item in item_ids}
    table, vocab = attribute_index(attrs, item_ids)
    torch.manual_seed(0)
    model = SASRec(ModelConfig(num_items=len(item_ids), max_len=10, dim=16, ffn_dim=32,
                               num_attributes=len(vocab)), table).eval()
    export_onnx(model, tmp_path / "enc.onnx")
    parity = check_parity(model, tmp_path / "enc.onnx", split.test_history())
    assert parity.ok and parity.max_abs_diff < 1e-4


def test_trains_from_an_exported_event_log(tmp_path):
    lines = []
    for user, items in synthetic_sequences(users=40).items():
        for t, item in enumerate(items):
            lines.append(json.dumps({"user_id": user, "item_id": item, "type": "view",
                                     "occurred_at": f"2024-05-01T10:{t:02d}:00Z"}))
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(reversed(lines)) + "\n")  # file order must not matter
    models = tmp_path / "models"
    argv = ["--events-jsonl", str(events), "--models-dir", str(models), "--epochs", "1",
            "--dim", "8", "--max-len", "6", "--parity-users", "20", "--threads", "1"]
    assert main(argv) == 0
    bundle = load_bundle(models, prefer_gpu=False)
    assert bundle.metadata["dataset"]["format"] == "events_jsonl"
    assert bundle.metadata["metrics"]["sasrec"]["test"]["users"] == 40


def test_train_with_attributes_and_filter_publishes_new_item_embeddings(tmp_path):
    seqs = synthetic_sequences(users=50)
    data = tmp_path / "seqs.txt"
    write_sequences(data, seqs)
    items = sorted({i for s in seqs.values() for i in s})
    attrs = tmp_path / "attrs.json"
    attrs.write_text(json.dumps({i: [f"cat{int(i.split('-')[1]) % 3}", "all"] for i in items}))
    models = tmp_path / "models"
    argv = ["train", "--data", str(data), "--attributes", str(attrs), "--models-dir", str(models),
            "--epochs", "1", "--dim", "8", "--max-len", "6", "--parity-users", "20", "--threads", "1",
            "--filter-mix", "0.5", "--id-dropout", "0.3"]
    assert main(argv) == 0
    bundle = load_bundle(models, prefer_gpu=False)
    assert bundle.metadata["onnx_parity"]["ok"] is True
    assert bundle.metadata["model"]["filter_mix"] == 0.5
    assert sorted(bundle.attribute_ids) == ["all", "cat0", "cat1", "cat2"]
    new = bundle.embed_new_items([["cat1", "all"], ["nope"]])
    assert new.shape == (2, 8) and np.all(new[1] == 0)
    j = [bundle.attribute_index_of[a] for a in ("cat1", "all")]
    np.testing.assert_allclose(new[0], bundle.attribute_embeddings[j].mean(0), atol=1e-6)
