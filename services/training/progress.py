"""What a person sees while a model trains: a bar over epochs (and one over the current
epoch's batches) on a terminal, one plain line per epoch otherwise. The JSON epoch lines
of the log are separate (stdout, or the log file ``shopstream up`` keeps)."""
from __future__ import annotations

from typing import TextIO

from services.common.progress import Progress, is_tty


class TrainingProgress:
    def __init__(self, max_epochs: int, max_minutes: float, stream: TextIO | None = None,
                 tty: bool | None = None) -> None:
        import sys

        self._stream = stream if stream is not None else sys.stderr
        self._tty = is_tty(self._stream) if tty is None else tty
        self._epochs = Progress(max_epochs, f"training (early stopping, at most {max_minutes:g} min)", "epoch",
                                stream=self._stream, tty=self._tty, plain_every_s=0)

    def batches(self, epoch: int, total: int) -> Progress:
        """The bar of one epoch's batches: on a terminal only, gone once the epoch ends."""
        return Progress(total, f"epoch {epoch}", "batch", stream=self._stream, tty=self._tty,
                        leave=False, plain=False)

    def epoch_done(self, row: dict[str, float], best_ndcg: float, best_epoch: int) -> None:
        postfix: dict[str, object] = {"loss": round(row["loss"], 4)}
        if "valid_ndcg@10" in row:
            postfix["valid_ndcg@10"] = round(row["valid_ndcg@10"], 4)
        postfix["best"] = f"{best_ndcg:.4f}@{best_epoch}"
        postfix["s/epoch"] = round(row["epoch_seconds"], 1)
        self._epochs.update(1, **postfix)

    def close(self, stopped_by: str) -> None:
        self._epochs.close()
        print(f"training stopped by {stopped_by.replace('_', ' ')} after {self._epochs.n} epochs",
              file=self._stream, flush=True)
