"""Per-model memory accounting: each buffer once, the scorer's own copies and sessions added."""
from __future__ import annotations

import numpy as np

from services.ranker.exact import NumpyExact, OnnxExact
from services.ranker.memory import distinct_nbytes


def test_views_and_repeats_count_their_buffer_once():
    table = np.zeros((10, 4), dtype=np.float32)
    assert distinct_nbytes([table, table, table[1:], table.T, None]) == table.nbytes
    assert distinct_nbytes([table, table.copy()]) == 2 * table.nbytes


def test_scorers_report_their_own_copy_of_the_catalog():
    items = np.ones((101, 8), dtype=np.float32)
    numpy_scorer = NumpyExact(items)
    assert (numpy_scorer.array_bytes, numpy_scorer.session_bytes) == (items.nbytes, 0)
    one_session = OnnxExact(items, ("CPUExecutionProvider",), intra_op_threads=1)
    assert one_session.small is one_session.session
    assert (one_session.array_bytes, one_session.session_bytes) == (0, items.nbytes + 101 * 4)
    twin = OnnxExact(items, ("CPUExecutionProvider",), intra_op_threads=2)
    assert twin.small is not twin.session and twin.session_bytes == 2 * (items.nbytes + 101 * 4)
