"""Vocabulary, leave-one-out split and length-bucketed batching for training."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch


def build_vocab(sequences: Mapping[str, list[str]]) -> list[str]:
    """Sorted external item ids (numerically when all are integers); index i+1 is item_ids[i]."""
    items = {item for seq in sequences.values() for item in seq}
    if all(i.isdigit() for i in items):
        return sorted(items, key=int)
    return sorted(items)


@dataclass
class Split:
    """Per-user index sequences for leave-one-out training and evaluation.

    ``train`` holds every user's training sequence (users with fewer than 3 items
    train on everything and are not evaluated). ``eval_*`` arrays cover only the
    evaluated users, in the same order.
    """

    num_items: int
    train: list[np.ndarray]
    eval_train: list[np.ndarray]
    valid_target: np.ndarray
    test_target: np.ndarray
    # bool [N+1]: items held out of training (new-item measurement); they are dropped
    # from every history, as serving drops ids the model does not know.
    hidden: np.ndarray | None = None

    def valid_history(self) -> list[np.ndarray]:
        return self.eval_train

    def test_history(self) -> list[np.ndarray]:
        full = [np.append(h, t) for h, t in zip(self.eval_train, self.valid_target)]
        if self.hidden is None:
            return full
        return [h[~self.hidden[h]] for h in full]

    def train_counts(self) -> np.ndarray:
        """Interaction counts per item index in the training portion (PopRec's scores)."""
        counts = np.zeros(self.num_items + 1, dtype=np.int64)
        for seq in self.train:
            np.add.at(counts, seq, 1)
        return counts


def attribute_index(attributes: dict[str, list[str]], item_ids: list[str]):
    """(int64 tensor [N+1, A] of 1-based attribute indices, the attribute vocabulary list).

    The vocabulary lists attributes in first-seen order over ``item_ids``; attribute
    ``vocab[j-1]`` has index ``j``. Only attributes of items in ``item_ids`` get an index.
    """
    index: dict[str, int] = {}
    rows = [[index.setdefault(a, len(index) + 1) for a in dict.fromkeys(attributes.get(item, []))]
            for item in item_ids]
    table = torch.zeros(len(item_ids) + 1, max(1, max(map(len, rows), default=0)), dtype=torch.int64)
    for i, row in enumerate(rows, start=1):
        table[i, :len(row)] = torch.tensor(row, dtype=torch.int64)
    return table, list(index)


def split_leave_one_out(sequences: Mapping[str, list[str]], item_ids: list[str]) -> Split:
    """Last item = test, second to last = validation, the rest = train (users with >= 3 items)."""
    index_of = {item: i for i, item in enumerate(item_ids, start=1)}
    train, eval_train, valid_t, test_t = [], [], [], []
    for seq in sequences.values():
        idx = np.fromiter((index_of[i] for i in seq), dtype=np.int64, count=len(seq))
        if len(idx) >= 3:
            train.append(idx[:-2])
            eval_train.append(idx[:-2])
            valid_t.append(idx[-2])
            test_t.append(idx[-1])
        else:
            train.append(idx)
    return Split(
        num_items=len(item_ids),
        train=train,
        eval_train=eval_train,
        valid_target=np.asarray(valid_t, dtype=np.int64),
        test_target=np.asarray(test_t, dtype=np.int64),
    )


def hold_out_items(split: Split, fraction: float, seed: int = 0) -> Split:
    """A copy of ``split`` with a random ``fraction`` of items removed from all training data.

    The held-out items keep their indices (so they are still in the catalog and get
    ranked), but none of their interactions is trained on or used as model input:
    they are new catalog items with attributes and no history. Validation and test
    targets are unchanged, so users whose target is a held-out item measure cold-start.
    """
    rng = np.random.default_rng(seed)
    hidden = np.zeros(split.num_items + 1, dtype=bool)
    count = round(fraction * split.num_items)
    hidden[1 + rng.choice(split.num_items, size=count, replace=False)] = True

    def keep(seq: np.ndarray) -> np.ndarray:
        return seq[~hidden[seq]]

    return Split(num_items=split.num_items, train=[keep(s) for s in split.train],
                 eval_train=[keep(s) for s in split.eval_train], valid_target=split.valid_target,
                 test_target=split.test_target, hidden=hidden)


def pad_left(seqs: list[np.ndarray], length: int) -> np.ndarray:
    """int64 [len(seqs), length]: the last ``length`` items of each, left-padded with 0."""
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for row, seq in enumerate(seqs):
        tail = seq[-length:]
        if len(tail):
            out[row, length - len(tail):] = tail
    return out


class _LengthBatches:
    """Batches of examples of similar length, each cropped to its longest example, so
    short sequences (most of an Amazon category) do not pay for 50 positions; batch
    order and membership are reshuffled every epoch with the given generator.
    Subclasses set ``inputs`` [E, max_len] (left-padded) and ``lengths`` [E], and build
    each batch's targets in ``_targets``."""

    inputs: np.ndarray
    lengths: np.ndarray
    batch_size: int

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def _targets(self, rows: np.ndarray, width: int) -> np.ndarray:
        raise NotImplementedError

    def epoch(self, rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # Jitter lengths before sorting so batches differ between epochs.
        order = np.argsort(self.lengths + rng.uniform(0, 3, len(self.lengths)), kind="stable")
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for b in rng.permutation(len(batches)):
            rows = batches[b]
            width = int(self.lengths[rows].max())
            yield torch.from_numpy(self.inputs[rows, -width:]), torch.from_numpy(self._targets(rows, width))


class PrefixBatches(_LengthBatches):
    """Last-position training on every prefix (BSARec's recipe): for each training sequence
    s and each i >= 1 one example, input s[:i] (its last ``max_len`` items) -> target s[i].

    Targets are zero but for the last column, so the model's loss (CE at non-zero
    targets) trains the last position only; required by a bidirectional filter (a
    position may then see later items of its own input, never its target).
    """

    def __init__(self, sequences: list[np.ndarray], max_len: int, batch_size: int) -> None:
        prefixes = [(s[max(0, i - max_len):i], s[i]) for s in sequences for i in range(1, len(s))]
        self.inputs = pad_left([p for p, _ in prefixes], max_len)
        self.answers = np.array([t for _, t in prefixes], dtype=np.int64)
        self.lengths = np.array([len(p) for p, _ in prefixes], dtype=np.int64)
        self.batch_size = batch_size

    def _targets(self, rows: np.ndarray, width: int) -> np.ndarray:
        targets = np.zeros((len(rows), width), dtype=np.int64)
        targets[:, -1] = self.answers[rows]
        return targets


class TrainBatches(_LengthBatches):
    """All-position next-item batches: each sequence s gives input s[:-1] and target s[1:]
    (its last ``max_len``)."""

    def __init__(self, train: list[np.ndarray], max_len: int, batch_size: int) -> None:
        examples = [s[-(max_len + 1):] for s in train if len(s) >= 2]
        self.inputs = pad_left([s[:-1] for s in examples], max_len)
        self.targets = pad_left([s[1:] for s in examples], max_len)
        self.lengths = np.array([len(s) - 1 for s in examples], dtype=np.int64)
        self.batch_size = batch_size

    def _targets(self, rows: np.ndarray, width: int) -> np.ndarray:
        return self.targets[rows, -width:]
