"""Progress: a tqdm bar on a terminal, plain lines otherwise."""
from __future__ import annotations

import io

from services.common.progress import Progress
from services.training.progress import TrainingProgress


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_when_not_a_terminal_at_most_every_interval():
    out, clock = io.StringIO(), _Clock()
    with Progress(300, "replay", "event", stream=out, plain_every_s=5.0, clock=clock) as bar:
        for _ in range(3):
            clock.now += 3.0  # a line at 6 s (200 sent), none at 9 s, the last one on close
            bar.update(100)
    assert out.getvalue().splitlines() == ["replay: 200/300 event", "replay: 300/300 event"]


def test_a_bar_on_a_terminal():
    out = io.StringIO()
    with Progress(4, "replay", "event", stream=out, tty=True) as bar:
        bar.update(4, sent=4)
    assert "replay: 100%" in out.getvalue() and "4/4" in out.getvalue() and "sent=4" in out.getvalue()


def test_training_shows_one_line_per_epoch_without_a_terminal():
    out = io.StringIO()
    progress = TrainingProgress(max_epochs=3, max_minutes=2, stream=out)
    for epoch in (1, 2):
        batches = progress.batches(epoch, 10)
        batches.update(10)
        batches.close()  # silent without a terminal: the epoch line says it all
        progress.epoch_done({"loss": 5.0 - epoch, "epoch_seconds": 1.5, "valid_ndcg@10": 0.1 * epoch}, 0.2, 2)
    progress.close("early_stopping")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("training") and "1/3 epoch" in lines[0] and "loss=4" in lines[0]
    assert "2/3 epoch" in lines[1] and "valid_ndcg@10=0.2" in lines[1] and "best=0.2000@2" in lines[1]
    assert lines[2] == "training stopped by early stopping after 2 epochs"
