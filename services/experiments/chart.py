"""The report's chart: CTR and conversion rate per time bucket, one line per variant (PNG)."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402


def write_chart(report: dict, path: Path | str, promoted_at_ms: int | None = None) -> Path:
    """Two panels over time (CTR, conversion rate) per variant; a vertical line where a
    winner was promoted, when given. Returns the path written."""
    path = Path(path)
    fig, (ctr_ax, conv_ax) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for variant, rows in report["series"].items():
        times = [datetime.fromtimestamp(r["bucket_ms"] / 1000, timezone.utc) for r in rows if r["impressions"]]
        ctr = [r["ctr"] for r in rows if r["impressions"]]
        conv = [r["conversion_rate"] for r in rows if r["impressions"]]
        ctr_ax.plot(times, ctr, marker=".", label=variant)
        conv_ax.plot(times, conv, marker=".", label=variant)
    if promoted_at_ms:
        at = datetime.fromtimestamp(promoted_at_ms / 1000, timezone.utc)
        for ax in (ctr_ax, conv_ax):
            ax.axvline(at, color="grey", linestyle="--", label="promotion")
    ctr_ax.set_ylabel("CTR (lists clicked / served)")
    conv_ax.set_ylabel("conversion (lists bought from / served)")
    conv_ax.set_xlabel("time bucket (UTC)")
    # Labels that suit the ticks' spacing: "%H:%M" alone printed each minute twice on a run of minutes.
    locator = mdates.AutoDateLocator()
    conv_ax.xaxis.set_major_locator(locator)
    conv_ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ctr_ax.set_title(f"experiment {report['experiment']}: per variant over time")
    for ax in (ctr_ax, conv_ax):
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
