"""Publishing a candidate and promoting it: CANDIDATES and LATEST written atomically, only for
verified bundles inside the models directory."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from services.common.bundle import (BundleError, candidate_versions, latest_version, publish_candidate,
                                    retire_candidate, set_live)
from services.common.bundle.files import EMBEDDINGS_FILE
from services.common.bundle.registry import CANDIDATES_FILE
from support.toy_bundle import publish_toy_bundle

IDS = ["a", "b", "c"]


def publish(models, live: bool = False) -> str:
    return publish_toy_bundle(models, IDS, np.eye(3, dtype=np.float32), max_len=4, live=live)


@pytest.fixture
def models(tmp_path):
    path = tmp_path / "models"
    publish(path, live=True)
    return path


def test_write_bundle_can_publish_without_going_live(models):
    live = latest_version(models)
    candidate = publish(models)
    assert latest_version(models) == live and (models / candidate).is_dir()
    assert candidate_versions(models) == []  # written, not yet a candidate


def test_publish_candidate_appends_newest_last_and_moves_a_repeat(models):
    one, two = publish(models), publish(models)
    assert publish_candidate(models, one) == [one]
    assert publish_candidate(models, two) == [one, two]
    assert publish_candidate(models, one) == [two, one]
    assert candidate_versions(models) == [two, one]
    assert (models / CANDIDATES_FILE).read_text() == f"{two}\n{one}\n"
    assert oct((models / CANDIDATES_FILE).stat().st_mode & 0o777) == "0o644"
    assert not [p for p in os.listdir(models) if p.startswith(f".{CANDIDATES_FILE}.tmp-")]  # no temp file left


def test_the_live_version_is_not_a_candidate(models):
    with pytest.raises(BundleError, match="already live"):
        publish_candidate(models, latest_version(models))
    assert candidate_versions(models) == []


def test_set_live_moves_latest_and_takes_the_version_off_the_candidates(models):
    first = latest_version(models)
    one, two = publish(models), publish(models)
    publish_candidate(models, one)
    publish_candidate(models, two)
    assert set_live(models, one) == first
    assert latest_version(models) == one and candidate_versions(models) == [two]
    assert set_live(models, two, keep_previous=True) == one
    assert latest_version(models) == two and candidate_versions(models) == [one]


@pytest.mark.parametrize("version", ["", "../models", "a/b", ".hidden", "LATEST", "CANDIDATES", "v" * 200,
                                     "no-such-version"])
def test_bad_or_missing_versions_are_refused_and_nothing_is_written(models, version):
    live = latest_version(models)
    for write in (publish_candidate, set_live):
        with pytest.raises(BundleError):
            write(models, version)
    assert latest_version(models) == live and not (models / CANDIDATES_FILE).exists()


def test_a_symlink_out_of_the_models_dir_is_refused(models, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    outside = publish(elsewhere)
    (models / "v-link").symlink_to(elsewhere / outside)
    with pytest.raises(BundleError, match="outside"):
        publish_candidate(models, "v-link")
    with pytest.raises(BundleError, match="outside"):
        set_live(models, "v-link")


def test_a_corrupt_bundle_is_refused(models):
    version = publish(models)
    (models / version / EMBEDDINGS_FILE).write_bytes(b"garbage")
    with pytest.raises(BundleError, match="checksum"):
        publish_candidate(models, version)
    with pytest.raises(BundleError, match="checksum"):
        set_live(models, version)


def test_reading_skips_blanks_comments_and_repeats(models):
    (models / CANDIDATES_FILE).write_text("# candidates\n\nv-a\n  v-b  # retrained\nv-a\n")
    assert candidate_versions(models) == ["v-a", "v-b"]
    assert retire_candidate(models, "v-a") == ["v-b"]
    assert retire_candidate(models, "v-gone") == ["v-b"]
    assert candidate_versions(models) == ["v-b"]


def test_concurrent_publishers_lose_no_candidate(models):
    versions = [publish(models) for _ in range(6)]
    threads = [threading.Thread(target=publish_candidate, args=(models, v)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(candidate_versions(models)) == sorted(versions)
