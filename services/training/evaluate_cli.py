"""``python -m services.training evaluate``: train one model per seed, report mean ± std.

Same data, split and training flags as ``train``, but nothing is published. PopRec is
computed once (it has no seed). With ``--holdout-items F`` a random fraction F of the
items is removed from training (see ``data.hold_out_items``) and the test users are
also reported in two groups: those whose target is a held-out (new) item, ranked with
its attribute-only embedding, and the rest.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

from services.common.logs import configure_logging
from services.training.inputs import (
    METRIC_KEYS,
    add_data_args,
    add_model_args,
    configs,
    prepare_data,
)

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shopstream evaluate", description=__doc__)
    add_data_args(p)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, one model each")
    p.add_argument("--report", help="write all per-seed metrics and the aggregate as JSON here")
    p.add_argument("--holdout-items", type=float, default=0.0,
                   help="fraction of items to hold out of training as new items (needs --attributes "
                        "for a meaningful model score)")
    p.add_argument("--holdout-seed", type=int, default=0)
    add_model_args(p)
    return p


def aggregate(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) of ``values``."""
    n = len(values)
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n}


def aggregate_runs(runs: list[dict[str, float]], keys: tuple[str, ...] = METRIC_KEYS) -> dict[str, dict]:
    """Per-metric mean/std over runs (each a ``{metric: value}`` dict)."""
    return {k: aggregate([r[k] for r in runs]) for k in keys}


def summarize(runs: list[dict], groups: dict) -> dict[str, dict]:
    """Mean ± std over the finished seeds: test, validation, each user group, training time."""
    return {
        "test": aggregate_runs([r["test"] for r in runs]),
        "valid": aggregate_runs([r["valid"] for r in runs]),
        "groups": {g: aggregate_runs([r["groups"][g] for r in runs]) for g in groups if g != "all"},
        "wall_seconds": aggregate([r["wall_seconds"] for r in runs]),
        "seconds_per_epoch": aggregate([r["seconds_per_epoch"] for r in runs]),
    }


def format_report(poprec: dict[str, float], runs: list[dict], summary: dict[str, dict],
                  users: int) -> str:
    """The printed table: PopRec, one row per seed, then mean ± std."""
    head = f"{'model':<16}" + "".join(f"{k:>17}" for k in METRIC_KEYS) + f"{'train s':>9}{'best ep':>8}"
    lines = [head, f"{'PopRec':<16}" + "".join(f"{poprec[k]:>17.4f}" for k in METRIC_KEYS)]
    for run in runs:
        lines.append(f"{'seed ' + str(run['seed']):<16}"
                     + "".join(f"{run['test'][k]:>17.4f}" for k in METRIC_KEYS)
                     + f"{run['wall_seconds']:>9.0f}{run['best_epoch']:>8}")
    lines.append(f"{'mean ± std':<16}" + "".join(
        f"{summary[k]['mean']:.4f} ± {summary[k]['std']:.4f}".rjust(17) for k in METRIC_KEYS))
    lines.append(f"test users: {users}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    import numpy as np

    from services.training.data import hold_out_items
    from services.training.evaluate import evaluate_model, evaluate_popularity
    from services.training.model import SASRec
    from services.training.train import seed_everything, train

    data = prepare_data(args)
    if data is None:
        return 2
    data_path, item_ids, split = data.path, data.item_ids, data.split
    groups: dict[str, np.ndarray | None] = {"all": None}
    if args.holdout_items > 0:
        split = hold_out_items(split, args.holdout_items, args.holdout_seed)
        new = split.hidden[split.test_target]
        groups = {"all": None, "new_item_targets": np.flatnonzero(new),
                  "known_item_targets": np.flatnonzero(~new)}
        logger.info("held out %d items; %d test users have a held-out target",
                    int(split.hidden.sum()), int(new.sum()))
    item_attributes, attribute_vocab = data.item_attributes, data.attribute_vocab
    users = len(split.test_target)
    poprec = {g: evaluate_popularity(split, "test", users=rows) for g, rows in groups.items()}
    poprec_valid = evaluate_popularity(split, "valid")

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    runs = []
    for seed in seeds:
        model_cfg, train_cfg = configs(args, len(item_ids), len(attribute_vocab), seed)
        seed_everything(seed, args.threads)
        model = SASRec(model_cfg, item_attributes)
        start = time.monotonic()
        result = train(model, split, train_cfg)
        run = {"seed": seed, "wall_seconds": time.monotonic() - start,
               "seconds_per_epoch": result.seconds_per_epoch, "epochs": result.epochs,
               "best_epoch": result.best_epoch, "stopped_by": result.stopped_by,
               "valid": evaluate_model(model, split, "valid"),
               "test": evaluate_model(model, split, "test"),
               "groups": {g: evaluate_model(model, split, "test", users=rows)
                          for g, rows in groups.items() if rows is not None}}
        runs.append(run)
        logger.info("seed %d: valid ndcg@10 %.4f test ndcg@10 %.4f hr@10 %.4f (%.0fs, best epoch %d)",
                    seed, run["valid"]["ndcg@10"], run["test"]["ndcg@10"], run["test"]["hr@10"],
                    run["wall_seconds"], result.best_epoch)
        if args.report:  # after every seed, so a long run that is stopped keeps what it finished
            report = {"data": str(data_path), "attributes": args.attributes, "test_users": users,
                      "items": len(item_ids), "holdout_items": args.holdout_items, "flags": vars(args),
                      "poprec": {"valid": poprec_valid, "test": poprec["all"],
                                 "groups": {g: m for g, m in poprec.items() if g != "all"}},
                      "runs": runs, "summary": summarize(runs, groups)}
            Path(args.report).write_text(json.dumps(report, indent=2, default=float), encoding="utf-8")

    summary = summarize(runs, groups)
    print(format_report(poprec["all"], runs, summary["test"], users))
    for g, agg in summary["groups"].items():
        n = len(groups[g])
        print(f"{g} ({n} users): model " + "  ".join(
            f"{k} {agg[k]['mean']:.4f}±{agg[k]['std']:.4f}" for k in METRIC_KEYS)
            + " | PopRec " + "  ".join(f"{k} {poprec[g][k]:.4f}" for k in METRIC_KEYS))
    return 0
