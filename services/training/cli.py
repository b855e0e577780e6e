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
from dataclasses import asdict
from pathlib import Path

import numpy as np

from services.common.bundle.files import sha256_file, write_bundle
from services.common.logs import configure_logging
from services.training.inputs import METRIC_KEYS, add_data_args, add_model_args, configs, prepare_data

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shopstream train", description=__doc__)
    add_data_args(p)
    p.add_argument("--models-dir", default=os.environ.get("SHOPSTREAM_MODELS_DIR", "./var/models"))
    p.add_argument("--report", help="write the evaluation table as JSON here")
    add_model_args(p)
    p.add_argument("--parity-users", type=int, default=1000)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show training progress on stderr: a bar on a terminal, a line per epoch otherwise")
    return p


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
    try:
        return train_main(argv)
    except KeyboardInterrupt:  # Ctrl-C: a line, not a torch stack
        print("shopstream train: interrupted; nothing published", file=sys.stderr)
        return 130


def train_main(argv: list[str]) -> int:
    """Train one model, check ONNX parity and publish the bundle."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    # torch is imported only here so `--help` and the bundle reader stay light.
    import torch

    from services.training.evaluate import evaluate_model, evaluate_popularity
    from services.training.export import OPSET, check_parity, export_onnx
    from services.training.model import SASRec
    from services.training.progress import TrainingProgress
    from services.training.train import seed_everything, train

    data = prepare_data(args)
    if data is None:
        return 2
    data_path, sequences, item_ids, split = data.path, data.sequences, data.item_ids, data.split
    item_attributes, attribute_vocab = data.item_attributes, data.attribute_vocab
    model_cfg, train_cfg = configs(args, len(item_ids), len(attribute_vocab), args.seed)
    seed_everything(args.seed, args.threads)
    model = SASRec(model_cfg, item_attributes)
    progress = TrainingProgress(train_cfg.max_epochs, train_cfg.max_minutes) if args.progress else None
    result = train(model, split, train_cfg, progress)

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
