"""The closed loop's chart: measured CTR per time bucket for each model that served, with the
ground truth beside it and the loop's moments (drift, experiment, promotion) marked."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def write_loop_chart(series: dict[str, list[dict]], marks: dict[str, float], path: Path | str,
                     title: str = "closed loop: CTR over time per served model", min_lists: int = 10) -> Path:
    """``series``: name -> rows of ``journal.ctr_over_time``; ``marks``: label -> seconds into
    the run (vertical lines). Solid lines are measured CTR (clicked lists / served lists),
    dashed lines the shoppers' true click probability for the same lists; a bucket with fewer
    than ``min_lists`` lists of a series is left out (its CTR is mostly noise)."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(11, 5.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, (name, rows) in enumerate(series.items()):
        rows = [r for r in rows if r["lists"] >= min_lists]
        if not rows:
            continue
        color = colors[n % len(colors)]
        t = [r["t"] for r in rows]
        ax.plot(t, [r["ctr"] for r in rows], marker=".", color=color, label=f"{name}: measured")
        ax.plot(t, [r["expected_ctr"] for r in rows], linestyle="--", color=color, alpha=0.6,
                label=f"{name}: ground truth")
    for n, (label, at) in enumerate(sorted(marks.items(), key=lambda kv: kv[1])):
        ax.axvline(at, color="grey", linestyle=":" if n % 2 else "-.", alpha=0.8)
        ax.annotate(label, (at, 1.0), xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right",
                    fontsize="small", color="dimgrey")
    ax.set_xlabel("seconds since the simulator started")
    ax.set_ylabel("CTR (lists clicked / lists served)")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
