"""The ``evaluate`` command: aggregation over seeds, tie handling, held-out (new) items."""
import json
import math

import numpy as np
import pytest
import torch

from services.ingest.datasets import write_sequences
from services.training.evaluate_cli import aggregate, aggregate_runs, format_report
from services.training.cli import main
from services.training.data import hold_out_items, split_leave_one_out
from services.training.evaluate import metrics_from_ranks, target_ranks_and_ties
from tests.unit.training.test_training_end_to_end import synthetic_sequences


def test_aggregate_mean_and_sample_std():
    agg = aggregate([0.1, 0.2, 0.3])
    assert agg["mean"] == pytest.approx(0.2) and agg["n"] == 3
    assert agg["std"] == pytest.approx(0.1)  # ddof=1
    assert aggregate([0.5]) == {"mean": 0.5, "std": 0.0, "n": 1}
    assert math.isnan(aggregate([])["mean"])


def test_aggregate_runs_and_table():
    runs = [{"hr@10": 0.1, "ndcg@10": 0.05, "hr@20": 0.2, "ndcg@20": 0.07},
            {"hr@10": 0.3, "ndcg@10": 0.07, "hr@20": 0.4, "ndcg@20": 0.09}]
    summary = aggregate_runs(runs)
    assert summary["hr@10"]["mean"] == pytest.approx(0.2)
    assert summary["ndcg@10"]["std"] == pytest.approx(math.sqrt(2) * 0.01)
    table = format_report(runs[0], [{"seed": s, "test": r, "wall_seconds": 1.0, "best_epoch": 2}
                                    for s, r in enumerate(runs)], summary, users=7)
    assert "PopRec" in table and "seed 1" in table and "mean ± std" in table
    assert "0.2000 ± 0.1414" in table and "test users: 7" in table


def test_ties_are_broken_at_random_in_expectation():
    #                        pad  1    2    3    4    5
    scores = torch.tensor([[9.0, 5.0, 7.0, 5.0, 5.0, 6.0]])
    greater, ties = target_ranks_and_ties(scores, torch.tensor([4]), torch.tensor([[0, 2]]))
    assert greater.tolist() == [1] and ties.tolist() == [2]  # item 5 above; items 1, 3 tie
    # Rank uniform on {1, 2, 3}: every rank < 10.
    m = metrics_from_ranks(greater, ties)
    assert m["hr@10"] == pytest.approx(1.0)
    assert m["ndcg@10"] == pytest.approx(np.mean([1 / math.log2(r + 2) for r in (1, 2, 3)]))
    # A block of ties straddling the cutoff: rank uniform on 8..11 -> half the mass within @10.
    m = metrics_from_ranks(np.array([8]), np.array([3]))
    assert m["hr@10"] == pytest.approx(0.5)
    assert m["ndcg@10"] == pytest.approx((1 / math.log2(10) + 1 / math.log2(11)) / 4)
    # Without ties it is the usual definition.
    assert metrics_from_ranks(np.array([3]), np.array([0]))["ndcg@10"] == pytest.approx(1 / math.log2(5))


def test_hold_out_items_removes_them_from_training_and_histories():
    seqs = {"u1": ["1", "2", "3", "4", "5"], "u2": ["2", "3", "1", "4"]}
    split = split_leave_one_out(seqs, ["1", "2", "3", "4", "5"])
    held = hold_out_items(split, 0.4, seed=0)
    hidden = np.flatnonzero(held.hidden)
    assert len(hidden) == 2 and 0 not in hidden
    for seq in held.train + held.test_history():
        assert not held.hidden[seq].any()
    assert held.test_target.tolist() == split.test_target.tolist()
    assert held.train_counts()[hidden].sum() == 0


def test_evaluate_command_reports_seeds_and_new_items(tmp_path):
    seqs = synthetic_sequences(users=80, items=30)
    data = tmp_path / "seqs.txt"
    write_sequences(data, seqs)
    items = sorted({i for s in seqs.values() for i in s})
    attrs = tmp_path / "attrs.json"
    attrs.write_text(json.dumps({i: [f"c{int(i.split('-')[1]) % 4}", "all"] for i in items}))
    report = tmp_path / "report.json"
    argv = ["evaluate", "--data", str(data), "--attributes", str(attrs), "--seeds", "0,1",
            "--epochs", "2", "--dim", "8", "--max-len", "8", "--threads", "1", "--filter-mix", "0.5",
            "--holdout-items", "0.2", "--id-dropout", "0.3", "--report", str(report), "--log-level", "WARNING"]
    assert main(argv) == 0
    out = json.loads(report.read_text())
    assert [r["seed"] for r in out["runs"]] == [0, 1]
    assert out["test_users"] == 80
    assert out["summary"]["test"]["ndcg@10"]["n"] == 2
    groups = out["runs"][0]["groups"]
    assert groups["new_item_targets"]["users"] + groups["known_item_targets"]["users"] == 80
    assert 0 <= out["poprec"]["groups"]["new_item_targets"]["hr@10"] <= 1
