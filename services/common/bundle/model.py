"""A loaded bundle: vocabulary, item vectors and the encoder session, ready to encode histories."""
from __future__ import annotations

import logging
import os
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from services.common.bundle.encoding import ENCODE_BUCKET_ROWS, encode_rows, pad_rows, variable_length
from services.common.bundle.errors import BundleError
from services.common.bundle.files import read_bundle_files
from services.common.bundle.golden import check_golden
from services.common.bundle.sessions import make_session, select_providers

logger = logging.getLogger(__name__)


@dataclass
class ModelBundle:
    """A loaded, verified bundle ready to encode histories.

    With attributes, a new item's output embedding is the mean of its attributes'
    rows (``embed_new_items``), which the model was trained to score on its own.
    """

    version: str
    path: Path
    max_len: int
    dim: int
    item_ids: list[str]
    item_embeddings: np.ndarray
    metadata: dict[str, Any]
    session: ort.InferenceSession = field(repr=False)
    attribute_ids: list[str] | None = None
    attribute_embeddings: np.ndarray | None = field(default=None, repr=False)
    index_of: dict[str, int] = field(init=False, repr=False)
    attribute_index_of: dict[str, int] = field(init=False, repr=False)
    # Whether the encoder takes [B, L] for any L <= max_len (bundles exported since the
    # sequence axis became dynamic) rather than exactly [B, max_len]; read once, not per call.
    variable_length: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index_of = {item: i for i, item in enumerate(self.item_ids, start=1)}
        self.attribute_index_of = {a: j for j, a in enumerate(self.attribute_ids or [], start=1)}
        self.variable_length = variable_length(self.session)

    @property
    def supports_new_items(self) -> bool:
        """Whether this bundle can embed items from their attributes alone."""
        return self.attribute_embeddings is not None

    def embed_new_items(self, attribute_lists: list[list[str]]) -> np.ndarray:
        """Output embeddings float32 [M, dim] for items not in the vocab, from their attributes.

        Each row is the mean of the embeddings of the item's known attributes, scored like
        ``item_embeddings`` rows (dot product with a user embedding). Unknown attributes
        are ignored; an item with none known gets a zero row (score 0 for every user).
        Raises BundleError when the bundle was trained without attributes.
        """
        if self.attribute_embeddings is None:
            raise BundleError(f"bundle {self.version} has no attribute embeddings")
        out = np.zeros((len(attribute_lists), self.dim), dtype=np.float32)
        for row, attrs in enumerate(attribute_lists):
            rows = [self.attribute_index_of[a] for a in dict.fromkeys(attrs)
                    if a in self.attribute_index_of]
            if rows:
                out[row] = self.attribute_embeddings[rows].mean(0)
        return out

    @property
    def providers(self) -> list[str]:
        """The providers onnxruntime actually uses for the encoder."""
        return self.session.get_providers()

    def to_indices(self, histories: list[list[str]], crop: bool = False) -> np.ndarray:
        """Left-padded int64 [B, L]: vocab indices of the last max_len known items.

        L is max_len, or with ``crop`` the longest of these rows (at least 1): the model
        masks padding and counts positions from the end, so cropping the all-padding
        columns changes nothing but the work (only for a ``variable_length`` encoder).
        """
        rows = self.index_rows(histories)
        return pad_rows(rows, max(1, max(map(len, rows), default=1)) if crop else self.max_len)

    def index_rows(self, histories: list[list[str]]) -> list[list[int]]:
        """Per history, the vocab indices of its last max_len known items (unknown ids dropped)."""
        lookup, max_len = self.index_of.get, self.max_len
        return [[x for x in map(lookup, history) if x is not None][-max_len:] for history in histories]

    def encode(self, histories: list[list[str]], *, bucket_rows: int = ENCODE_BUCKET_ROWS,
               pool: Executor | None = None, parts: int = 1) -> np.ndarray:
        """User embeddings float32 [B, dim] for external-id histories (``encoding.encode_rows``).

        Unknown item ids are dropped. A history with no known item still gets an
        embedding (of the all-padding input); callers decide how to treat cold users.
        """
        return self.encode_rows(self.index_rows(histories), bucket_rows=bucket_rows, pool=pool, parts=parts)

    def encode_rows(self, rows: list[list[int]], *, bucket_rows: int = ENCODE_BUCKET_ROWS,
                    pool: Executor | None = None, parts: int = 1) -> np.ndarray:
        """User embeddings float32 [B, dim] for index rows (``index_rows``)."""
        return encode_rows(self.session, rows, dim=self.dim,
                           fixed_len=None if self.variable_length else self.max_len,
                           bucket_rows=bucket_rows, pool=pool, parts=parts)


def load_bundle(
    models_dir: str | os.PathLike[str],
    version: str | None = None,
    *,
    prefer_gpu: bool = True,
    intra_op_threads: int = 0,
    allow_spinning: bool = False,
) -> ModelBundle:
    """Load and verify ``<models_dir>/<version>`` (default: the LATEST one) with one encoder
    session (``intra_op_threads``: 0 = every core). Raises BundleError when the files, their
    checksums or their validation fail, or the session does not reproduce the golden output."""
    files = read_bundle_files(models_dir, version)
    session = make_session(files.encoder_path, select_providers(prefer_gpu),
                           intra_op_threads=intra_op_threads, allow_spinning=allow_spinning)
    check_golden(session, files.metadata, int(files.metadata["max_len"]), int(files.item_embeddings.shape[1]),
                 str(files.path))
    bundle = ModelBundle(
        version=files.version,
        path=files.path,
        max_len=int(files.metadata["max_len"]),
        dim=int(files.item_embeddings.shape[1]),
        item_ids=files.item_ids,
        item_embeddings=files.item_embeddings,
        metadata=files.metadata,
        session=session,
        attribute_ids=files.attribute_ids,
        attribute_embeddings=files.attribute_embeddings,
    )
    logger.info("loaded model bundle %s (%d items, providers %s)", files.version, len(files.item_ids),
                bundle.providers)
    return bundle
