"""The bundle's files: the one artifact training publishes and the serving side loads.

Layout of ``<models_dir>/<version>/`` (see docs/model.md):

- ``encoder.onnx``: ``item_seq`` int64 [batch, max_len] (left-padded with 0, item
  indices 1..N) -> ``user_emb`` float32 [batch, dim].
- ``item_embeddings.npy``: float32 [N+1, dim]; row 0 is padding. score = user_emb . row.
- ``vocab.json``: the N external item ids; ``item_ids[i-1]`` is index ``i``.
- ``metadata.json``: version, training facts, metrics and the sha256 of every other file.
- optional, when trained with item attributes: ``attribute_vocab.json`` (attribute ids;
  ``vocab[j-1]`` is row ``j``) and ``attribute_embeddings.npy`` float32 [A+1, dim]
  (row 0 padding).

``<models_dir>/LATEST`` names the current version (``<models_dir>/CANDIDATES`` the
versions served beside it: ``registry.py``). Publishing is atomic (a temp dir
renamed, then LATEST replaced) and records a golden input and its output
(``golden.py``); reading verifies every checksum, the version name and the arrays
(``validation.py``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from services.common.bundle.errors import BundleError
from services.common.bundle.golden import record_golden
from services.common.bundle.validation import check_arrays, check_version_name

logger = logging.getLogger(__name__)

ENCODER_FILE = "encoder.onnx"
EMBEDDINGS_FILE = "item_embeddings.npy"
VOCAB_FILE = "vocab.json"
METADATA_FILE = "metadata.json"
LATEST_FILE = "LATEST"
ATTRIBUTE_VOCAB_FILE = "attribute_vocab.json"
ATTRIBUTE_EMBEDDINGS_FILE = "attribute_embeddings.npy"
CHECKSUMMED_FILES = (ENCODER_FILE, EMBEDDINGS_FILE, VOCAB_FILE)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class BundleFiles:
    """The verified contents of one bundle directory (the encoder stays a file)."""

    version: str
    path: Path
    metadata: dict[str, Any]
    item_ids: list[str]
    item_embeddings: np.ndarray
    attribute_ids: list[str] | None = None
    attribute_embeddings: np.ndarray | None = None

    @property
    def encoder_path(self) -> Path:
        return self.path / ENCODER_FILE


def latest_version(models_dir: str | os.PathLike[str]) -> str | None:
    """The version named in ``<models_dir>/LATEST``, or None when there is none yet."""
    try:
        version = (Path(models_dir) / LATEST_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return version or None


def read_bundle_files(models_dir: str | os.PathLike[str], version: str | None = None) -> BundleFiles:
    """Read and verify ``<models_dir>/<version>`` (default: the LATEST one).

    Raises BundleError when no version is published, a file is missing, or a
    checksum recorded in metadata.json does not match.
    """
    version = version or latest_version(models_dir)
    if version is None:
        raise BundleError(f"no model published in {models_dir} (no {LATEST_FILE} file)")
    path = check_version_name(models_dir, version)
    meta_path = path / METADATA_FILE
    if not meta_path.is_file():
        raise BundleError(f"bundle {path} has no {METADATA_FILE}")
    metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    expected = metadata.get("files") or {}
    for name in CHECKSUMMED_FILES:
        if name not in expected:
            raise BundleError(f"bundle {path}: {METADATA_FILE} has no checksum for {name}")
    for name, sha in expected.items():
        file = path / name
        if not file.is_file():
            raise BundleError(f"bundle {path} is missing {name}")
        actual = sha256_file(file)
        if actual != sha:
            raise BundleError(
                f"bundle {path}: checksum mismatch for {name} (expected {sha}, got {actual})"
            )
    item_ids = json.loads((path / VOCAB_FILE).read_text(encoding="utf-8"))
    item_embeddings = np.load(path / EMBEDDINGS_FILE, allow_pickle=False).astype(np.float32, copy=False)
    attribute_ids, attribute_embeddings = None, None
    if ATTRIBUTE_EMBEDDINGS_FILE in expected and ATTRIBUTE_VOCAB_FILE in expected:
        attribute_ids = json.loads((path / ATTRIBUTE_VOCAB_FILE).read_text(encoding="utf-8"))
        attribute_embeddings = np.load(path / ATTRIBUTE_EMBEDDINGS_FILE, allow_pickle=False).astype(np.float32,
                                                                                                      copy=False)
    check_arrays(path, metadata, item_ids, item_embeddings, attribute_ids, attribute_embeddings)
    return BundleFiles(version, path, metadata, item_ids, item_embeddings, attribute_ids, attribute_embeddings)


def make_version(onnx_sha256: str, now: datetime | None = None) -> str:
    """``v<UTC yyyymmddHHMMSS>-<first 8 hex of the encoder's sha256>``."""
    now = now or datetime.now(timezone.utc)
    return f"v{now.astimezone(timezone.utc):%Y%m%d%H%M%S}-{onnx_sha256[:8]}"


def write_latest(models_dir: str | os.PathLike[str], version: str) -> None:
    """Point ``LATEST`` at ``version`` atomically (temp file + os.replace)."""
    models_dir = Path(models_dir)
    fd, tmp = tempfile.mkstemp(prefix=".LATEST.", dir=models_dir)
    os.chmod(tmp, 0o644)  # mkstemp makes it 0600
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(version + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, models_dir / LATEST_FILE)


def write_bundle(
    models_dir: str | os.PathLike[str],
    onnx_path: str | os.PathLike[str],
    item_embeddings: np.ndarray,
    item_ids: list[str],
    metadata: dict[str, Any],
    now: datetime | None = None,
    attributes: tuple[list[str], np.ndarray] | None = None,
    *,
    live: bool = True,
) -> tuple[str, Path]:
    """Publish a bundle atomically and return ``(version, path)``.

    ``live=False`` leaves LATEST alone: the bundle is a candidate, to list with
    ``registry.publish_candidate`` and promote with ``registry.set_live``.

    ``attributes``: (attribute ids, float32 [len(ids) + 1, dim] output attribute
    embeddings with row 0 padding), for bundles that can embed new items.

    Files are written into a temp dir inside ``models_dir``, which is renamed to
    ``<version>``; only then is LATEST replaced, so readers never see half a bundle.
    ``metadata`` is extended with version, created_at, max_len checks and checksums.
    """
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    item_embeddings = np.ascontiguousarray(item_embeddings, dtype=np.float32)
    if item_embeddings.ndim != 2 or item_embeddings.shape[0] != len(item_ids) + 1:
        raise ValueError("item_embeddings must be [len(item_ids) + 1, dim]")
    names = CHECKSUMMED_FILES
    if attributes is not None:
        attribute_ids, attribute_embeddings = attributes
        attribute_embeddings = np.ascontiguousarray(attribute_embeddings, dtype=np.float32)
        if attribute_embeddings.shape != (len(attribute_ids) + 1, item_embeddings.shape[1]):
            raise ValueError("attribute embeddings must be [len(attribute_ids) + 1, dim]")
        names = (*CHECKSUMMED_FILES, ATTRIBUTE_VOCAB_FILE, ATTRIBUTE_EMBEDDINGS_FILE)
    now = now or datetime.now(timezone.utc)
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-", dir=models_dir))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; serving may run as another user
        shutil.copyfile(onnx_path, tmp / ENCODER_FILE)
        np.save(tmp / EMBEDDINGS_FILE, item_embeddings)
        (tmp / VOCAB_FILE).write_text(json.dumps([str(i) for i in item_ids]), encoding="utf-8")
        if attributes is not None:
            np.save(tmp / ATTRIBUTE_EMBEDDINGS_FILE, attribute_embeddings)
            (tmp / ATTRIBUTE_VOCAB_FILE).write_text(
                json.dumps([str(a) for a in attribute_ids]), encoding="utf-8")
        files = {name: sha256_file(tmp / name) for name in names}
        version = make_version(files[ENCODER_FILE], now)
        meta = {
            **metadata,
            "golden": record_golden(tmp / ENCODER_FILE, len(item_ids), int(metadata["max_len"])),
            "version": version,
            "created_at": now.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
            "dim": int(item_embeddings.shape[1]),
            "num_items": len(item_ids),
            "files": files,
        }
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True),
                                         encoding="utf-8")
        final = models_dir / version
        if final.exists():
            raise BundleError(f"bundle {final} already exists")
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if live:
        write_latest(models_dir, version)
    logger.info("published model bundle %s%s", final, "" if live else " (not live)")
    return version, final
