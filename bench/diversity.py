"""``python -m bench.diversity``: what variety costs in accuracy and time, on a trained bundle.

Each sampled user's last item is held out; the model ranks the catalog from the rest of the
history (history items excluded), and the ranker's re-ranking (``services/ranker/diversity.py``)
picks 10 of the top candidates at each setting of the diversity weight (MMR) and the
per-category cap. Reported per setting: NDCG@10 of the held-out item, intra-list diversity
(1 - mean pairwise cosine of the list's item vectors), category coverage (distinct categories
in the list / 10) and the re-ranking's time per request beside the exact scoring's.

Categories: a catalog JSONL's ``category`` (``--catalog``), or, for an attribute file like
Amazon Beauty's whose ids are anonymous, the attribute at ``--category-position`` of each item's
list (a proxy for its category: say so when quoting the figures).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from bench.report import machine, table, write
from services.common.bundle.model import load_bundle
from services.ingest.datasets import read_item_attributes, read_sequences
from services.ranker.diversity import intra_list_diversity, rerank
from services.ranker.engine import RERANK_FACTOR, RERANK_MIN
from services.ranker.scoring import top_k, unit_rows

K = 10
SETTINGS = [(0.0, 0), (0.1, 0), (0.3, 0), (0.5, 0), (0.0, 3), (0.0, 2), (0.3, 2), (0.7, 0)]


def categories_of(bundle, args) -> np.ndarray:
    """int category code per vocabulary index (-1: padding or unknown)."""
    by_item: dict[str, str] = {}
    if args.catalog:
        with open(args.catalog, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    doc = json.loads(line)
                    by_item[str(doc["item_id"])] = doc.get("category", "")
    elif args.attributes:
        for item, attrs in read_item_attributes(args.attributes).items():
            if len(attrs) > args.category_position:
                by_item[item] = attrs[args.category_position]
    codes: dict[str, int] = {}
    out = np.full(len(bundle.item_ids) + 1, -1, dtype=np.int32)
    for i, item in enumerate(bundle.item_ids, start=1):
        category = by_item.get(item)
        if category:
            out[i] = codes.setdefault(category, len(codes))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.diversity", description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", required=True)
    parser.add_argument("--data", required=True, help="sequence file the bundle was trained on")
    parser.add_argument("--catalog", help="catalog JSONL with a category per item")
    parser.add_argument("--attributes", help="item->attributes JSON (category = --category-position)")
    parser.add_argument("--category-position", type=int, default=1)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", default="diversity")
    args = parser.parse_args(argv)

    bundle = load_bundle(args.models_dir, prefer_gpu=False)
    categories = categories_of(bundle, args)
    unit = unit_rows(bundle.item_embeddings)
    rng = np.random.default_rng(args.seed)
    sequences = read_sequences(args.data)
    rows, targets = [], []
    for user in rng.permutation(sorted(sequences)).tolist():
        row = bundle.index_rows([sequences[user]])[0]
        if len(row) >= 3:
            rows.append(row[:-1])
            targets.append(row[-1])
        if len(rows) >= args.users:
            break
    users = bundle.encode_rows(rows)
    fetch = max(RERANK_MIN, RERANK_FACTOR * K)
    candidates, exact_s = [], 0.0
    for row, user in zip(rows, users):
        started = time.perf_counter()
        scores = bundle.item_embeddings @ user
        mask = np.ones(len(scores), dtype=bool)
        mask[row] = False
        candidates.append(top_k(scores, mask, fetch))
        exact_s += time.perf_counter() - started
    results = []
    for weight, cap in SETTINGS:
        ndcg, ild, coverage, rerank_s = [], [], [], 0.0
        for (cand_i, cand_s), target in zip(candidates, targets):
            started = time.perf_counter()
            picked, _ = rerank(cand_i, cand_s, K, unit_vectors=unit, weight=weight, categories=categories, cap=cap)
            rerank_s += time.perf_counter() - started
            hit = np.flatnonzero(picked == target)
            ndcg.append(1.0 / np.log2(hit[0] + 2) if hit.size else 0.0)
            ild.append(intra_list_diversity(unit, picked))
            known = categories[picked]
            coverage.append(len(set(known[known >= 0].tolist())) / K)
        results.append({"diversity": weight, "max_per_category": cap, "ndcg@10": float(np.mean(ndcg)),
                        "intra_list_diversity": float(np.mean(ild)), "category_coverage": float(np.mean(coverage)),
                        "rerank_ms_per_request": 1e3 * rerank_s / len(rows),
                        "exact_scoring_ms_per_request": 1e3 * exact_s / len(rows)})
    print(f"bundle {bundle.version}: {len(rows)} users, {len(bundle.item_ids)} items, "
          f"{int(categories.max()) + 1} categories, re-ranking the top {fetch}")
    print(table(results, ["diversity", "max_per_category", "ndcg@10", "intra_list_diversity", "category_coverage",
                          "rerank_ms_per_request", "exact_scoring_ms_per_request"]))
    path = write(args.out, {"machine": machine(), "bundle": bundle.version, "data": args.data,
                            "categories": args.catalog or f"{args.attributes} position {args.category_position}",
                            "users": len(rows), "k": K, "candidates": fetch, "results": results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
