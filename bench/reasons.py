"""``python -m bench.reasons``: how faithful each explanation method is, on a trained bundle.

For each sampled user (history of at least 3 known items) the model's top item r (not in the
history) is explained by one history item c per method. Faithful means: removing c from the
history lowers r's rank more than removing a random other history item does. Methods:
``occlusion-w`` (``reasons.occlude`` as the ranker calls it with SHOPSTREAM_RANKER_REASON_WINDOW=w,
the top ``reasons.POOL`` candidates as the pool), ``cosine`` (nearest history item to r in the
output item space), ``dot`` (raw dot product), ``recent-cosine`` (cosine weighted by recency:
the ranker's default), ``recent`` (the newest history item) and ``random`` (a random history
item, the floor). Target (issue 14): >= 70% for the method the ranker uses, on >= 2,000 users
of Beauty.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from bench.report import machine, table, write
from services.common.bundle.model import load_bundle
from services.ingest.datasets import read_sequences
from services.ranker.reasons import POOL, WINDOW, Question, explain, occlude
from services.ranker.scoring import unit_rows


def ranks_of(bundle, rows: list[list[int]], targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank (0 = best) of each target among every item not in that row's history, and its
    margin: the best other item's score minus the target's (negative while it leads)."""
    users = bundle.encode_rows(rows)
    scores = users @ bundle.item_embeddings.T  # [B, N+1]
    scores[:, 0] = -np.inf
    for b, row in enumerate(rows):
        scores[b, row] = -np.inf
    target_scores = scores[np.arange(len(rows)), targets].copy()
    ranks = (scores > target_scores[:, None]).sum(axis=1)
    scores[np.arange(len(rows)), targets] = -np.inf
    return ranks, scores.max(axis=1) - target_scores


def without(row: list[int], item: int) -> list[int]:
    return [x for x in row if x != item]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reasons", description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", required=True)
    parser.add_argument("--data", required=True, help="sequence file the bundle was trained on")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--window", type=int, nargs="+", default=[WINDOW],
                        help="occlusion windows to measure (the ranker's SHOPSTREAM_RANKER_REASON_WINDOW)")
    parser.add_argument("--out", default="reasons")
    args = parser.parse_args(argv)

    bundle = load_bundle(args.models_dir, prefer_gpu=False)
    rng = np.random.default_rng(args.seed)
    sequences = read_sequences(args.data)
    users = [u for u, items in sequences.items() if len(bundle.index_rows([items])[0]) >= 3]
    picked = rng.choice(len(users), size=min(args.users, len(users)), replace=False)
    rows = [bundle.index_rows([sequences[users[i]]])[0] for i in picked]

    started = time.perf_counter()
    user_vecs = bundle.encode_rows(rows)
    scores = user_vecs @ bundle.item_embeddings.T
    scores[:, 0] = -np.inf
    for b, row in enumerate(rows):
        scores[b, row] = -np.inf
    top = scores.argmax(axis=1)
    unit = unit_rows(bundle.item_embeddings)
    pools = np.argsort(-(user_vecs @ bundle.item_embeddings.T)[:, 1:], axis=1)[:, :POOL] + 1  # the scorer's candidates
    questions = [Question(u, np.array(r), np.array([t]), p) for u, r, t, p in zip(user_vecs, rows, top, pools)]
    cited = {f"occlusion-{w}": np.array([ev.item[0] for ev in occlude(questions, bundle.encode_rows,
                                                                        bundle.item_embeddings, w)])
             for w in args.window}
    cited.update({
        "cosine": np.array([explain(unit, np.array(r), np.array([t])).item[0] for r, t in zip(rows, top)]),
        "dot": np.array([explain(bundle.item_embeddings, np.array(r), np.array([t]), "dot").item[0]
                         for r, t in zip(rows, top)]),
        "recent-cosine": np.array([explain(unit, np.array(r), np.array([t]), "recent-cosine").item[0]
                                   for r, t in zip(rows, top)]),
        "recent": np.array([r[-1] for r in rows]),
        "random": np.array([rng.choice(r) for r in rows]),
    })
    results = []
    for method, items in cited.items():
        # The comparison item: a random history item other than the cited one.
        others = np.array([rng.choice([x for x in r if x != c]) if any(x != c for x in r) else c
                           for r, c in zip(rows, items)])
        usable = others != items
        rank_cited, gap_cited = ranks_of(bundle, [without(r, c) for r, c in zip(rows, items)], top)
        rank_other, gap_other = ranks_of(bundle, [without(r, o) for r, o in zip(rows, others)], top)
        wins = (rank_cited > rank_other) & usable
        # Where both removals leave it at the same rank, the larger margin (the best other item's
        # score minus its own: how far it fell, or how little it still leads by) decides.
        wins_tiebreak = wins | ((rank_cited == rank_other) & (gap_cited > gap_other) & usable)
        n = max(1, int(usable.sum()))
        results.append({
            "method": method,
            "users": int(usable.sum()),
            "faithful_pct": round(100.0 * wins.sum() / n, 2),
            "cites_own_history_pct": round(100.0 * np.mean([c in r for r, c in zip(rows, items)]), 2),
            "faithful_tiebreak_pct": round(100.0 * wins_tiebreak.sum() / n, 2),
            "rank_ties_pct": round(100.0 * ((rank_cited == rank_other) & usable).sum() / n, 2),
            "median_rank_after_removing_cited": float(np.median(rank_cited[usable])),
            "median_rank_after_removing_other": float(np.median(rank_other[usable])),
        })
    seconds = time.perf_counter() - started
    print(f"bundle {bundle.version}: {len(rows)} users, {len(bundle.item_ids)} items ({seconds:.1f} s)")
    print(table(results, ["method", "users", "faithful_pct", "cites_own_history_pct", "faithful_tiebreak_pct", "rank_ties_pct",
                          "median_rank_after_removing_cited", "median_rank_after_removing_other"]))
    path = write(args.out, {"machine": machine(), "bundle": bundle.version, "data": args.data,
                            "sampled_users": len(rows), "seed": args.seed, "results": results,
                            "pool": POOL,
                            "definition": "faithful: rank of the top item after removing the cited history item "
                                          "> its rank after removing a random other history item (ties fail); "
                                          "tiebreak: equal ranks are decided by the larger margin (best other item's "
                                          "score minus its own)"})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
