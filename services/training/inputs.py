"""What ``train`` and ``evaluate`` share: their flags, the configs built from them and
the data both start from. Torch is imported inside functions so ``--help`` stays light."""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.ingest.datasets import read_events_jsonl, read_item_attributes, read_sequences

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
    from services.training.data import attribute_index, build_vocab, split_leave_one_out

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
