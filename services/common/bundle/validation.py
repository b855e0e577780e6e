"""What a bundle must satisfy before it goes live, beyond its checksums."""
from __future__ import annotations

import os
import re
from pathlib import Path
import numpy as np

from services.common.bundle.errors import BundleError
from services.contract.limits import MAX_ID_CHARS

# What make_version writes, and anything an operator may name a hand-made bundle: a plain
# directory name, never a path.
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_version_name(models_dir: str | os.PathLike[str], version: str) -> Path:
    """``<models_dir>/<version>``, if ``version`` names a directory directly inside ``models_dir``."""
    root = Path(models_dir).resolve()
    if not _VERSION.fullmatch(version):
        raise BundleError(f"model version {version!r} is not a directory name inside {models_dir}")
    path = root / version
    if path.resolve().parent != root:  # a symbolic link out of the models directory
        raise BundleError(f"model version {version!r} points outside {models_dir}")
    return Path(models_dir) / version


def _check_ids(ids: object, what: str, where: Path) -> None:
    if not isinstance(ids, list) or not ids:
        raise BundleError(f"bundle {where}: {what} must be a non-empty list of ids")
    if not all(isinstance(i, str) and 0 < len(i) <= MAX_ID_CHARS for i in ids):
        raise BundleError(f"bundle {where}: {what} has an id that is not a string of 1..{MAX_ID_CHARS} characters")
    if len(set(ids)) != len(ids):
        raise BundleError(f"bundle {where}: {what} has duplicate ids")


def _check_matrix(matrix: np.ndarray, what: str, rows: int, dim: int | None, where: Path) -> None:
    if matrix.ndim != 2 or matrix.shape[0] != rows or matrix.shape[1] < 1 or (dim and matrix.shape[1] != dim):
        raise BundleError(f"bundle {where}: {what} has shape {matrix.shape}, expected ({rows}, {dim or 'dim'})")
    if not np.isfinite(matrix).all():
        raise BundleError(f"bundle {where}: {what} has {int((~np.isfinite(matrix)).sum())} non-finite values")


def check_arrays(where: Path, metadata: dict, item_ids: object, item_embeddings: np.ndarray,
                 attribute_ids: object = None, attribute_embeddings: np.ndarray | None = None) -> None:
    """Vocabularies, shapes and finite values of a bundle's tables, and its ``max_len``."""
    max_len = metadata.get("max_len")
    if not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 1:
        raise BundleError(f"bundle {where}: metadata max_len must be a positive integer, got {max_len!r}")
    _check_ids(item_ids, "vocab.json", where)
    _check_matrix(item_embeddings, "item_embeddings.npy", len(item_ids) + 1, None, where)
    if attribute_embeddings is not None:
        _check_ids(attribute_ids, "attribute_vocab.json", where)
        _check_matrix(attribute_embeddings, "attribute_embeddings.npy", len(attribute_ids) + 1,
                      item_embeddings.shape[1], where)
