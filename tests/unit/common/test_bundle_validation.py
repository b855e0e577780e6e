"""A bundle goes live only if it is sound beyond its checksums: finite tables of the right
shapes, a clean vocabulary, a version inside the models directory and an encoder that
reproduces the golden output recorded when it was published."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from services.common.bundle import BundleError, load_bundle, sha256_file, write_latest
from services.common.bundle.files import ENCODER_FILE, EMBEDDINGS_FILE, METADATA_FILE, VOCAB_FILE
from support.toy_bundle import publish_toy_bundle, sum_encoder

IDS = ["a", "b", "c", "d"]


def vectors() -> np.ndarray:
    return np.arange(1, 13, dtype=np.float32).reshape(4, 3)


def forge(path, name: str, data: bytes) -> None:
    """Replace one file of a bundle and record its new checksum, as an attacker or a broken tool would."""
    (path / name).write_bytes(data)
    meta = json.loads((path / METADATA_FILE).read_text())
    meta["files"][name] = sha256_file(path / name)
    (path / METADATA_FILE).write_text(json.dumps(meta))


def npy_bytes(array: np.ndarray, tmp_path) -> bytes:
    np.save(tmp_path / "x.npy", array)
    return (tmp_path / "x.npy").read_bytes()


@pytest.fixture
def bundle_dir(tmp_path):
    models = tmp_path / "models"
    version = publish_toy_bundle(models, IDS, vectors(), max_len=5)
    return models, models / version


def test_a_published_bundle_records_its_golden_output_and_loads(bundle_dir):
    models, path = bundle_dir
    golden = json.loads((path / METADATA_FILE).read_text())["golden"]
    assert golden["rows"] and len(golden["user_emb"]) == len(golden["rows"])
    assert load_bundle(models, prefer_gpu=False).version == path.name


def test_non_finite_item_embeddings_are_refused_even_with_consistent_checksums(bundle_dir, tmp_path):
    models, path = bundle_dir
    nan = np.full((5, 3), np.nan, dtype=np.float32)
    forge(path, EMBEDDINGS_FILE, npy_bytes(nan, tmp_path))
    with pytest.raises(BundleError, match="non-finite"):
        load_bundle(models, prefer_gpu=False)


def test_an_embedding_table_of_the_wrong_shape_is_refused(bundle_dir, tmp_path):
    models, path = bundle_dir
    forge(path, EMBEDDINGS_FILE, npy_bytes(np.zeros((3, 3), dtype=np.float32), tmp_path))
    with pytest.raises(BundleError, match="shape"):
        load_bundle(models, prefer_gpu=False)


@pytest.mark.parametrize("vocab", [["a", "b", "b", "d"], ["a", "b", "", "d"], ["a", 2, "c", "d"], []])
def test_a_bad_vocabulary_is_refused(bundle_dir, vocab):
    models, path = bundle_dir
    forge(path, VOCAB_FILE, json.dumps(vocab).encode())
    with pytest.raises(BundleError, match="vocab.json"):
        load_bundle(models, prefer_gpu=False)


def test_an_encoder_swapped_for_another_one_fails_the_golden_check(bundle_dir):
    models, path = bundle_dir
    other = sum_encoder(np.vstack([np.zeros((1, 3)), vectors() * 2]).astype(np.float32))
    forge(path, ENCODER_FILE, other.SerializeToString())
    with pytest.raises(BundleError, match="golden"):
        load_bundle(models, prefer_gpu=False)


def test_an_encoder_that_returns_nan_is_refused(bundle_dir):
    models, path = bundle_dir
    table = np.vstack([np.zeros((1, 3)), vectors()]).astype(np.float32)
    table[1:] = np.nan
    forge(path, ENCODER_FILE, sum_encoder(table).SerializeToString())
    with pytest.raises(BundleError, match="non-finite"):
        load_bundle(models, prefer_gpu=False)


def test_a_bundle_without_a_golden_record_is_refused(bundle_dir):
    models, path = bundle_dir
    meta = json.loads((path / METADATA_FILE).read_text())
    del meta["golden"]
    (path / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="golden"):
        load_bundle(models, prefer_gpu=False)


@pytest.mark.parametrize("version", ["../elsewhere/v1", "..", "/etc", "v1/../../x", ".hidden", "a b"])
def test_latest_must_name_a_directory_inside_the_models_dir(tmp_path, version):
    models = tmp_path / "models"
    elsewhere = tmp_path / "elsewhere"
    publish_toy_bundle(elsewhere, IDS, vectors(), max_len=5)
    os.rename(next(p for p in elsewhere.iterdir() if p.is_dir()), elsewhere / "v1")
    models.mkdir()
    write_latest(models, version)
    with pytest.raises(BundleError, match="version"):
        load_bundle(models, prefer_gpu=False)


def test_a_symlink_out_of_the_models_dir_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    version = publish_toy_bundle(elsewhere, IDS, vectors(), max_len=5)
    models = tmp_path / "models"
    models.mkdir()
    (models / "v-link").symlink_to(elsewhere / version)
    write_latest(models, "v-link")
    with pytest.raises(BundleError, match="outside"):
        load_bundle(models, prefer_gpu=False)


def test_metadata_max_len_must_be_a_positive_integer(bundle_dir):
    models, path = bundle_dir
    meta = json.loads((path / METADATA_FILE).read_text())
    meta["max_len"] = "5"
    (path / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="max_len"):
        load_bundle(models, prefer_gpu=False)
