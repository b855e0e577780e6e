"""Which published versions serve: the live one (``LATEST``) and the candidates (``CANDIDATES``).

``<models_dir>/CANDIDATES`` lists, one per line, oldest first, the versions a ranker keeps
loaded beside the live one so that experiments (and shadow scoring) can name them. The
ranker keeps the newest ``SHOPSTREAM_RANKER_MAX_MODELS - 1`` of them loaded and picks up
every change on its next poll, without a restart (docs/ranker.md, "Several model versions").

Publishing a candidate and promoting one are the two writes:

- ``publish_candidate(models_dir, version)``: the retrain command, after ``write_bundle(...,
  live=False)``;
- ``set_live(models_dir, version)``: the promote command; LATEST moves to ``version``, which
  leaves the candidate list (a ranker that already holds it switches without loading it again).

Both check the version the way serving will (a plain directory name inside ``models_dir``,
no link out of it, a bundle whose checksums and arrays verify) before they write, write
atomically (temp file + ``os.replace``) and hold an exclusive lock on ``.CANDIDATES.lock``
while they read, change and write the list, so two commands never lose each other's edit.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from services.common.bundle.errors import BundleError
from services.common.bundle.files import LATEST_FILE, latest_version, read_bundle_files, write_latest

logger = logging.getLogger(__name__)

CANDIDATES_FILE = "CANDIDATES"
_LOCK_FILE = ".CANDIDATES.lock"


def candidate_versions(models_dir: str | os.PathLike[str]) -> list[str]:
    """The versions listed in ``<models_dir>/CANDIDATES``, oldest first, without repeats
    (blank lines and ``#`` comments skipped); empty when there is no such file.

    Names are returned as written: loading one checks it (``check_version_name``), so a bad
    line fails that candidate alone.
    """
    try:
        text = (Path(models_dir) / CANDIDATES_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return list(dict.fromkeys(line for line in lines if line))


def publish_candidate(models_dir: str | os.PathLike[str], version: str) -> list[str]:
    """Add ``version`` (a published bundle) to CANDIDATES as the newest; returns the new list.

    A version already listed moves to the end; the live version is refused (it is served
    already). Raises BundleError when the version is not a verified bundle of ``models_dir``.
    """
    _verified(models_dir, version)
    with _locked(models_dir):
        if version == latest_version(models_dir):
            raise BundleError(f"model version {version!r} is already live in {models_dir}")
        listed = [v for v in candidate_versions(models_dir) if v != version]
        listed.append(version)
        _write_candidates(models_dir, listed)
    logger.info("published candidate model %s", version, extra={"models_dir": str(models_dir)})
    return listed


def retire_candidate(models_dir: str | os.PathLike[str], version: str) -> list[str]:
    """Drop ``version`` from CANDIDATES (rankers unload it on their next poll); returns the new list."""
    with _locked(models_dir):
        listed = candidate_versions(models_dir)
        if version in listed:
            listed.remove(version)
            _write_candidates(models_dir, listed)
    return listed


def set_live(models_dir: str | os.PathLike[str], version: str, *, keep_previous: bool = False) -> str | None:
    """Make ``version`` the live model: LATEST names it and it leaves CANDIDATES.

    ``keep_previous`` lists the version that was live as the newest candidate, so rankers keep
    it loaded (a rollback, or a control arm, costs no load). Returns the previous live version.
    Raises BundleError when ``version`` is not a verified bundle of ``models_dir``.
    """
    _verified(models_dir, version)
    with _locked(models_dir):
        previous = latest_version(models_dir)
        listed = [v for v in candidate_versions(models_dir) if v != version]
        if keep_previous and previous and previous != version:
            listed = [v for v in listed if v != previous] + [previous]
        # LATEST first: a ranker polling between the two writes sees the new live version
        # listed as a candidate too, which it ignores (the live one is never a candidate).
        write_latest(models_dir, version)
        _write_candidates(models_dir, listed)
    logger.info("model %s is live (was %s)", version, previous, extra={"models_dir": str(models_dir)})
    return previous


def _verified(models_dir: str | os.PathLike[str], version: str) -> None:
    """The checks serving makes before a bundle loads (name, path, checksums, arrays);
    the encoder's golden output is checked when a ranker loads it."""
    if not isinstance(version, str) or not version or version in (LATEST_FILE, CANDIDATES_FILE):
        raise BundleError(f"model version {version!r} is not a bundle name")
    read_bundle_files(models_dir, version)


@contextlib.contextmanager
def _locked(models_dir: str | os.PathLike[str]) -> Iterator[None]:
    path = Path(models_dir) / _LOCK_FILE
    with open(path, "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _write_candidates(models_dir: str | os.PathLike[str], versions: list[str]) -> None:
    models_dir = Path(models_dir)
    fd, tmp = tempfile.mkstemp(prefix=f".{CANDIDATES_FILE}.tmp-", dir=models_dir)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; serving may run as another user
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(f"{v}\n" for v in versions))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, models_dir / CANDIDATES_FILE)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
