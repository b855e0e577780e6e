"""``shopstream train``: train on a sequence file or event log, evaluate, publish a bundle.

``python -m services.training [train] ...`` trains and publishes (the default);
``python -m services.training evaluate ...`` trains one model per seed and reports
metrics only (see ``services/training/evaluate_cli.py``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.ingest.datasets import read_events_jsonl, read_item_attributes, read_sequences
from services.common.logs import configure_logging
from services.common.bundle.files import sha256_file, write_bundle

logger = logging.getLogger(__name__)

METRIC_KEYS = ("hr@10", "ndcg@10", "hr@20", "ndcg@20")


def add_data_args(p: argparse.ArgumentParser) -> None:
    """Input flags shared by ``train`` and ``evaluate``."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="sequence file: 'user item item ...' per line, time order")
    src.add_argument("--events-jsonl", help="exported event log (JSONL), sorted by occurred_at per user")
    p.add_argument("--event-types", help="comma-separated event types to keep from --events-jsonl")
    p.add_argument("--attributes", help="item->attributes JSON; attribute embeddings join item "
                   "inputs and outputs (new items can then be embedded from attributes)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Model and optimisation flags shared by ``train`` and ``evaluate``."""
    from services.training.model import ModelConfig
    from services.training.train import TrainConfig

    m, t = ModelConfig(num_items=0), TrainConfig()
    p.add_argument("--epochs", type=int, default=t.max_epochs, help="max epochs")
    p.add_argument("--max-minutes", type=float, default=t.max_minutes, help="training wall-time cap")
    p.add_argument("--patience", type=int, default=t.patience, help="evaluations without improvement")
    p.add_argument("--seed", type=int, default=t.seed)
    p.add_argument("--threads", type=int, default=t.threads)
    p.add_argument("--batch-size", type=int, default=t.batch_size)
    p.add_argument("--lr", type=float, default=t.lr)
    p.add_argument("--weight-decay", type=float, default=t.weight_decay)
    p.add_argument("--ema-decay", type=float, default=t.ema_decay,
                   help="validate and keep an exponential moving average of the weights; 0: raw weights")
    p.add_argument("--max-len", type=int, default=m.max_len)
    p.add_argument("--dim", type=int, default=m.dim)
    p.add_argument("--blocks", type=int, default=m.num_blocks)
    p.add_argument("--heads", type=int, default=m.num_heads)
    p.add_argument("--ffn-dim", type=int, default=None, help="default 4 * dim")
    p.add_argument("--dropout", type=float, default=m.dropout)
    p.add_argument("--post-ln", action=argparse.BooleanOptionalAction, default=not m.norm_first,
                   help="LayerNorm after each residual sum (the default); --no-post-ln: pre-LN blocks")
    p.add_argument("--filter-mix", type=float, default=m.filter_mix,
                   help="weight of the causal low/high-pass filter branch mixed with attention")
    p.add_argument("--filter-window", type=float, default=m.filter_window,
                   help="initial decay length (items) of the filter's low-pass kernel")
    p.add_argument("--label-smoothing", type=float, default=m.label_smoothing)
    p.add_argument("--id-dropout", type=float, default=m.id_dropout,
                   help="with attributes: chance an item's output id part is dropped in training")
    p.add_argument("--tied", action=argparse.BooleanOptionalAction, default=m.tied,
                   help="share input and output item (and attribute) embeddings (the default); "
                        "--no-tied: a separate output table")
    p.add_argument("--no-output-attributes", action="store_true",
                   help="with attributes: output item embeddings use ids only")
    p.add_argument("--prefix-training", action=argparse.BooleanOptionalAction, default=t.prefix_training,
                   help="train the last position of every prefix (BSARec's recipe); --no-prefix-training: "
                        "every position of each sequence at once (needs --no-bidirectional-filter)")
    p.add_argument("--bidirectional-filter", action=argparse.BooleanOptionalAction,
                   default=m.filter_bidirectional,
                   help="the filter's low-pass also mixes later items of the input (needs prefix training)")
    p.add_argument("--log-level", default="INFO")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shopstream train", description=__doc__)
    add_data_args(p)
    p.add_argument("--models-dir", default=os.environ.get("SHOPSTREAM_MODELS_DIR", "./var/models"))
    p.add_argument("--report", help="write the evaluation table as JSON here")
    add_model_args(p)
    p.add_argument("--parity-users", type=int, default=1000)
    return p


def configs(args: argparse.Namespace, num_items: int, num_attributes: int, seed: int):
    """(ModelConfig, TrainConfig) from parsed flags."""
    from services.training.model import ModelConfig
    from services.training.train import TrainConfig

    train_cfg = TrainConfig(lr=args.lr, weight_decay=args.weight_decay, batch_size=args.batch_size,
                            max_epochs=args.epochs, patience=args.patience,
                            max_minutes=args.max_minutes, seed=seed, threads=args.threads,
                            prefix_training=args.prefix_training, ema_decay=args.ema_decay)
    model_cfg = ModelConfig(num_items=num_items, max_len=args.max_len, dim=args.dim,
                            num_blocks=args.blocks, num_heads=args.heads,
                            ffn_dim=args.ffn_dim or 4 * args.dim, dropout=args.dropout,
                            norm_first=not args.post_ln, num_attributes=num_attributes,
                            output_attributes=not args.no_output_attributes,
                            id_dropout=args.id_dropout, filter_mix=args.filter_mix,
                            filter_window=args.filter_window, label_smoothing=args.label_smoothing,
                            tied=args.tied, filter_bidirectional=args.bidirectional_filter)
    return model_cfg, train_cfg


def attribute_table(attributes: dict[str, list[str]], item_ids: list[str]):
    """int64 tensor [N+1, A] of attribute indices (1-based, 0 = padding) and the attribute count."""
    table, vocab = attribute_index(attributes, item_ids)
    return table, len(vocab)


def attribute_index(attributes: dict[str, list[str]], item_ids: list[str]):
    """(int64 tensor [N+1, A] of 1-based attribute indices, the attribute vocabulary list).

    The vocabulary lists attributes in first-seen order over ``item_ids``; attribute
    ``vocab[j-1]`` has index ``j``. Only attributes of items in ``item_ids`` get an index.
    """
    import torch

    index: dict[str, int] = {}
    rows = [[index.setdefault(a, len(index) + 1) for a in dict.fromkeys(attributes.get(item, []))]
            for item in item_ids]
    table = torch.zeros(len(item_ids) + 1, max(1, max(map(len, rows), default=0)), dtype=torch.int64)
    for i, row in enumerate(rows, start=1):
        table[i, :len(row)] = torch.tensor(row, dtype=torch.int64)
    return table, list(index)


def load_sequences(args: argparse.Namespace) -> tuple[Path, dict[str, list[str]]]:
    """The input path and its per-user sequences, from --data or --events-jsonl."""
    if args.data:
        return Path(args.data), read_sequences(args.data)
    types = args.event_types.split(",") if args.event_types else None
    return Path(args.events_jsonl), read_events_jsonl(args.events_jsonl, types)


@dataclass
class TrainingData:
    """What ``train`` and ``evaluate`` both start from."""

    path: Path
    sequences: dict[str, list[str]]
    item_ids: list[str]
    split: Any  # data.Split
    item_attributes: Any = None  # int64 tensor [N+1, A] or None
    attribute_vocab: list[str] = field(default_factory=list)


def prepare_data(args: argparse.Namespace) -> TrainingData | None:
    """Sequences, vocabulary, leave-one-out split and (with --attributes) the attribute table.

    None (logged) when the input has no interactions.
    """
    from services.training.data import build_vocab, split_leave_one_out

    path, sequences = load_sequences(args)
    item_ids = build_vocab(sequences)
    if not item_ids:
        logger.error("no interactions in %s", path)
        return None
    data = TrainingData(path, sequences, item_ids, split_leave_one_out(sequences, item_ids))
    logger.info("%d users, %d items, %d interactions, %d evaluated users", len(sequences),
                len(item_ids), sum(map(len, sequences.values())), len(data.split.test_target))
    if args.attributes:
        data.item_attributes, data.attribute_vocab = attribute_index(read_item_attributes(args.attributes), item_ids)
    return data


def format_table(rows: dict[str, dict[str, float]], users: int, wall_seconds: float) -> str:
    lines = [f"{'model':<10}" + "".join(f"{k:>10}" for k in METRIC_KEYS)]
    for name, metrics in rows.items():
        lines.append(f"{name:<10}" + "".join(f"{metrics[k]:>10.4f}" for k in METRIC_KEYS))
    lines.append(f"test users: {users}   training wall time: {wall_seconds:.1f}s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``train`` (the default, also when no subcommand is given) or ``evaluate``."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "evaluate":
        from services.training.evaluate_cli import main as evaluate_main
        return evaluate_main(argv[1:])
    if argv and argv[0] == "train":
        argv = argv[1:]
    return train_main(argv)


def train_main(argv: list[str]) -> int:
    """Train one model, check ONNX parity and publish the bundle."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    # torch is imported only here so `--help` and the bundle reader stay light.
    import torch

    from services.training.evaluate import evaluate_model, evaluate_popularity
    from services.training.export import OPSET, check_parity, export_onnx
    from services.training.model import SASRec
    from services.training.train import seed_everything, train

    data = prepare_data(args)
    if data is None:
        return 2
    data_path, sequences, item_ids, split = data.path, data.sequences, data.item_ids, data.split
    item_attributes, attribute_vocab = data.item_attributes, data.attribute_vocab
    model_cfg, train_cfg = configs(args, len(item_ids), len(attribute_vocab), args.seed)
    seed_everything(args.seed, args.threads)
    model = SASRec(model_cfg, item_attributes)
    result = train(model, split, train_cfg)

    metrics = {
        "poprec": {"valid": evaluate_popularity(split, "valid"), "test": evaluate_popularity(split, "test")},
        "sasrec": {"valid": evaluate_model(model, split, "valid"), "test": evaluate_model(model, split, "test")},
    }
    print(format_table({"PopRec": metrics["poprec"]["test"], "SASRec": metrics["sasrec"]["test"]},
                       len(split.test_target), result.wall_seconds))
    print(f"epochs: {result.epochs} (best {result.best_epoch}, stopped by {result.stopped_by}), "
          f"{result.seconds_per_epoch:.1f} s/epoch")

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "encoder.onnx"
        export_onnx(model, onnx_path)
        rng = np.random.default_rng(args.seed)
        histories = split.test_history() or [s for s in split.train if len(s)]
        pick = rng.choice(len(histories), size=min(args.parity_users, len(histories)), replace=False)
        parity = check_parity(model, onnx_path, [histories[i] for i in pick])
        print(f"onnx parity: {parity.users} users, max |diff| {parity.max_abs_diff:.2e}, "
              f"top-10 identical {parity.top10_exact_match:.2%}, "
              f"mismatches beyond ties {parity.top10_mismatched_users} -> {'OK' if parity.ok else 'FAILED'}")
        if not parity.ok:
            logger.error("ONNX encoder does not match torch; not publishing: %s", parity.as_dict())
            return 3
        metadata = {
            "dataset": {"path": str(data_path.resolve()), "sha256": sha256_file(data_path),
                        "format": "sequences" if args.data else "events_jsonl",
                        "users": len(sequences), "items": len(item_ids)},
            "max_len": model_cfg.max_len,
            "model": {"name": "sasrec", **asdict(model_cfg)},
            "training": asdict(train_cfg),
            "seed": args.seed,
            "epochs": result.epochs, "best_epoch": result.best_epoch, "stopped_by": result.stopped_by,
            "wall_seconds": result.wall_seconds, "seconds_per_epoch": result.seconds_per_epoch,
            "metrics": metrics,
            "onnx_parity": parity.as_dict(),
            "onnx_opset": OPSET,
            "torch_version": torch.__version__,
        }
        if args.attributes:
            metadata["attributes"] = {"path": str(Path(args.attributes).resolve()),
                                      "sha256": sha256_file(args.attributes),
                                      "num_attributes": model_cfg.num_attributes,
                                      "items_covered": int((item_attributes[1:] > 0).any(1).sum())}
        attr_emb = model.attribute_output_embeddings()
        version, path = write_bundle(
            args.models_dir, onnx_path, model.output_embeddings().numpy(), item_ids, metadata,
            attributes=None if attr_emb is None else (attribute_vocab, attr_emb.numpy()))
    print(f"published bundle {version} at {path}")
    if args.report:
        report = {"version": version, "test_users": len(split.test_target),
                  "wall_seconds": result.wall_seconds, "epochs": result.epochs,
                  "best_epoch": result.best_epoch, "seconds_per_epoch": result.seconds_per_epoch,
                  "metrics": metrics, "onnx_parity": parity.as_dict()}
        Path(args.report).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0
