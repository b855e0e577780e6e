"""The model bundle: the one artifact training publishes and the serving side loads.

Layout of ``<models_dir>/<version>/`` (see docs/model.md):

- ``encoder.onnx``: ``item_seq`` int64 [batch, max_len] (left-padded with 0, item
  indices 1..N) -> ``user_emb`` float32 [batch, dim].
- ``item_embeddings.npy``: float32 [N+1, dim]; row 0 is padding. score = user_emb . row.
- ``vocab.json``: the N external item ids; ``item_ids[i-1]`` is index ``i``.
- ``metadata.json``: version, training facts, metrics and the sha256 of every other file.
- optional, when trained with item attributes: ``attribute_vocab.json`` (attribute ids;
  ``vocab[j-1]`` is row ``j``) and ``attribute_embeddings.npy`` float32 [A+1, dim]
  (row 0 padding). A new item's output embedding is the mean of its attributes' rows
  (``ModelBundle.embed_new_items``), which the model was trained to score on its own.

``<models_dir>/LATEST`` names the current version. This module must stay free of torch.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

logger = logging.getLogger(__name__)

ENCODER_FILE = "encoder.onnx"
EMBEDDINGS_FILE = "item_embeddings.npy"
VOCAB_FILE = "vocab.json"
METADATA_FILE = "metadata.json"
LATEST_FILE = "LATEST"
INPUT_NAME = "item_seq"
OUTPUT_NAME = "user_emb"
ATTRIBUTE_VOCAB_FILE = "attribute_vocab.json"
ATTRIBUTE_EMBEDDINGS_FILE = "attribute_embeddings.npy"
CHECKSUMMED_FILES = (ENCODER_FILE, EMBEDDINGS_FILE, VOCAB_FILE)
# Rows per length bucket when a large batch is encoded (16 measured best for batch 64 on
# the 2-core box: 8 rows 4.1 ms, 16 3.8, 32 4.1, 64 4.7; docs/performance.md).
ENCODE_BUCKET_ROWS = 16


class BundleError(RuntimeError):
    """A bundle is missing, incomplete or fails its checksums."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def select_providers(prefer_gpu: bool = True) -> list[str]:
    """onnxruntime providers to ask for: CUDA first when this build has it, then CPU."""
    available = ort.get_available_providers()
    providers = []
    if prefer_gpu and "CUDAExecutionProvider" in available:
        providers.append("CUDAExecutionProvider")
    providers.append("CPUExecutionProvider")
    return providers


def make_session(
    onnx_path: str | os.PathLike[str], prefer_gpu: bool = True, intra_op_threads: int = 0
) -> ort.InferenceSession:
    """An inference session with full graph optimisation; 0 threads = onnxruntime's default."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    return ort.InferenceSession(
        str(onnx_path), sess_options=options, providers=select_providers(prefer_gpu)
    )


@dataclass
class ModelBundle:
    """A loaded, verified bundle ready to encode histories."""

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

    def encode(self, histories: list[list[str]]) -> np.ndarray:
        """User embeddings float32 [B, dim] for external-id histories (``encode_rows``).

        Unknown item ids are dropped. A history with no known item still gets an
        embedding (of the all-padding input); callers decide how to treat cold users.
        """
        return self.encode_rows(self.session, self.index_rows(histories))

    def encode_rows(self, session: ort.InferenceSession, rows: list[list[int]],
                    bucket_rows: int = ENCODE_BUCKET_ROWS, pool: Executor | None = None,
                    parts: int = 1) -> np.ndarray:
        """User embeddings float32 [B, dim] for index rows (``index_rows``), run on ``session``.

        A ``variable_length`` encoder gets each batch only as wide as its longest row, and
        a large batch (at least 2 * ``bucket_rows``) is sorted by length and run in chunks of
        ``bucket_rows``, each cropped to its own longest row, so a few long histories do
        not make every short one pay for ``max_len`` positions. Neither changes a result
        (the model masks padding and counts positions from the end; the export's parity
        check covers cropped inputs); older fixed-length encoders get [B, max_len].

        With ``pool`` (for a single-threaded ``session``), any batch of two or more rows is
        sorted by length, split into at least ``parts`` chunks of about ``bucket_rows``, and
        the chunks run concurrently on ``pool``: parallelism over rows rather than inside
        each operator, whose per-operator hand-offs cost more than they save at these sizes.
        """
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        if not self.variable_length:
            return _run_encoder(session, pad_rows(rows, self.max_len))
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        parallel = pool is not None and len(rows) > 1
        if not parallel and len(rows) < 2 * bucket_rows:
            return _run_encoder(session, pad_rows(rows, max(1, int(lengths.max()))))
        order = np.argsort(lengths, kind="stable")
        if parallel:
            chunks = np.array_split(order, min(len(rows), max(parts, -(-len(rows) // bucket_rows))))
        else:
            chunks = length_buckets(order, bucket_rows)
        out = np.empty((len(rows), self.dim), dtype=np.float32)

        def run(chunk: np.ndarray) -> None:
            out[chunk] = _run_encoder(session, pad_rows([rows[i] for i in chunk], max(1, int(lengths[chunk[-1]]))))

        if parallel:
            for _ in pool.map(run, chunks):  # type: ignore[union-attr]
                pass
        else:
            for chunk in chunks:
                run(chunk)
        return out

    def scores(self, user_emb: np.ndarray) -> np.ndarray:
        """Scores [B, N+1] of every item index for the given user embeddings (col 0 = padding)."""
        return user_emb @ self.item_embeddings.T


def length_buckets(order: np.ndarray, bucket_rows: int) -> list[np.ndarray]:
    """``order`` (rows sorted by length) in consecutive chunks of ``bucket_rows``; a runt last
    chunk (under half a bucket) joins the one before."""
    chunks, start, n = [], 0, len(order)
    while start < n:
        stop = start + bucket_rows
        if n - stop < bucket_rows // 2:
            stop = n
        chunks.append(order[start:stop])
        start = stop
    return chunks


def _run_encoder(session: ort.InferenceSession, indices: np.ndarray) -> np.ndarray:
    (user_emb,) = session.run([OUTPUT_NAME], {INPUT_NAME: indices})
    return np.asarray(user_emb, dtype=np.float32)


def pad_rows(rows: list[list[int]], width: int) -> np.ndarray:
    """int64 [len(rows), width], each row right-aligned (left-padded with 0); rows fit in width."""
    batch = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        if row:
            batch[i, width - len(row):] = row
    return batch


def variable_length(session: ort.InferenceSession) -> bool:
    """Whether the session's sequence axis is symbolic (any length) rather than fixed."""
    shape = session.get_inputs()[0].shape
    return len(shape) == 2 and not isinstance(shape[1], int)


def latest_version(models_dir: str | os.PathLike[str]) -> str | None:
    """The version named in ``<models_dir>/LATEST``, or None when there is none yet."""
    try:
        version = (Path(models_dir) / LATEST_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return version or None


def load_bundle(
    models_dir: str | os.PathLike[str],
    version: str | None = None,
    prefer_gpu: bool = True,
    intra_op_threads: int = 0,
) -> ModelBundle:
    """Load and verify ``<models_dir>/<version>`` (default: the LATEST one).

    Raises BundleError when no version is published, a file is missing, or a
    checksum recorded in metadata.json does not match.
    """
    version = version or latest_version(models_dir)
    if version is None:
        raise BundleError(f"no model published in {models_dir} (no {LATEST_FILE} file)")
    path = Path(models_dir) / version
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
    item_embeddings = np.load(path / EMBEDDINGS_FILE).astype(np.float32, copy=False)
    if item_embeddings.shape[0] != len(item_ids) + 1:
        raise BundleError(
            f"bundle {path}: {EMBEDDINGS_FILE} has {item_embeddings.shape[0]} rows,"
            f" vocab has {len(item_ids)} items (+1 padding row expected)"
        )
    attribute_ids, attribute_embeddings = None, None
    if ATTRIBUTE_EMBEDDINGS_FILE in expected and ATTRIBUTE_VOCAB_FILE in expected:
        attribute_ids = [str(a) for a in
                         json.loads((path / ATTRIBUTE_VOCAB_FILE).read_text(encoding="utf-8"))]
        attribute_embeddings = np.load(path / ATTRIBUTE_EMBEDDINGS_FILE).astype(np.float32, copy=False)
        if attribute_embeddings.shape != (len(attribute_ids) + 1, item_embeddings.shape[1]):
            raise BundleError(
                f"bundle {path}: {ATTRIBUTE_EMBEDDINGS_FILE} has shape {attribute_embeddings.shape},"
                f" expected ({len(attribute_ids) + 1}, {item_embeddings.shape[1]})"
            )
    session = make_session(path / ENCODER_FILE, prefer_gpu, intra_op_threads)
    bundle = ModelBundle(
        version=version,
        path=path,
        max_len=int(metadata["max_len"]),
        dim=int(item_embeddings.shape[1]),
        item_ids=[str(i) for i in item_ids],
        item_embeddings=item_embeddings,
        metadata=metadata,
        session=session,
        attribute_ids=attribute_ids,
        attribute_embeddings=attribute_embeddings,
    )
    logger.info("loaded model bundle %s (%d items, providers %s)", version, len(item_ids),
                bundle.providers)
    return bundle


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
) -> tuple[str, Path]:
    """Publish a bundle atomically and return ``(version, path)``.

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
    write_latest(models_dir, version)
    logger.info("published model bundle %s", final)
    return version, final
