"""RankEngine end to end on real toy bundles: top-k + filters vs brute force, for every backend."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from shopstream.catalog.v1 import catalog_pb2

from services.common.filters import ItemFilter
from services.common.stores.catalog import CatalogSnapshot
from services.ranker.engine import RankEngine, RankJob
from services.ranker.metrics import ranker_metrics
from services.ranker.model_holder import ModelHolder
from services.ranker.runtime import ScoringConfig
from support.toy_bundle import publish_toy_bundle

N, DIM = 400, 8
IDS = [f"i{n}" for n in range(1, N + 1)]
CATEGORIES = ["a", "b", "c", "d"]


def catalog() -> CatalogSnapshot:
    rng = np.random.default_rng(5)
    items = {i: catalog_pb2.CatalogItem(item_id=i, category=CATEGORIES[n % 4], in_stock=bool(rng.random() < 0.8))
             for n, i in enumerate(IDS) if n % 10}  # every 10th item is not in the catalog at all
    return CatalogSnapshot(version=3, items=items)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bundles")
    publish_toy_bundle(path, IDS, np.random.default_rng(0).normal(size=(N, DIM)))
    return path


def load(models_dir, **config):
    executor = ThreadPoolExecutor(1)
    holder = ModelHolder(models_dir, executor, ranker_metrics(),
                         scoring=ScoringConfig(prefer_gpu=False, **config))
    holder._catalog = catalog()
    model = holder._load(open(models_dir / "LATEST").read().strip(), holder._catalog)
    executor.shutdown()
    return model


def rules_allow(snap: CatalogSnapshot, item_id: str, f: ItemFilter) -> bool:
    """The filter rules spelled out item by item (an oracle independent of RowFilter): items
    absent from the catalog are in stock with no category."""
    item = snap.items.get(item_id)
    category, in_stock = (item.category, item.in_stock) if item is not None else ("", True)
    return (item_id not in f.exclude_item_ids and (in_stock or not f.in_stock_only)
            and (not f.include_categories or category in f.include_categories)
            and category not in f.exclude_categories)


def brute_force(model, vec, item_filter, history, purchased, k):
    snap = catalog()
    excluded = item_filter.user_exclusions(history, purchased)
    scores = model.items.embeddings @ vec
    allowed = [i for i in range(1, N + 1) if rules_allow(snap, IDS[i - 1], item_filter) and IDS[i - 1] not in excluded]
    return sorted(allowed, key=lambda i: (-scores[i], i))[:k], scores


def random_jobs(model, rng, count):
    jobs = []
    for _ in range(count):
        history = [IDS[i] for i in rng.integers(0, N, int(rng.integers(1, 15)))]
        purchased = set(history[:2])
        cats = set(rng.choice(CATEGORIES, int(rng.integers(0, 3)), replace=False).tolist())
        item_filter = ItemFilter(
            include_categories=frozenset(cats) if rng.random() < 0.3 else frozenset(),
            exclude_categories=frozenset(cats) if rng.random() < 0.3 else frozenset(),
            exclude_item_ids=frozenset(IDS[i] for i in rng.integers(0, N, 5)),
            in_stock_only=bool(rng.random() < 0.7), exclude_seen=bool(rng.random() < 0.5),
            exclude_purchased=bool(rng.random() < 0.5))
        vec = rng.normal(size=DIM).astype(np.float32) if rng.random() < 0.5 else None
        jobs.append(RankJob(model, history, purchased, vec, item_filter, int(rng.integers(1, 60))))
    return jobs


@pytest.mark.parametrize("config", [
    {"scorer": "exact", "exact_backend": "numpy"},
    {"scorer": "exact", "exact_backend": "onnx"},
    {"scorer": "ann", "ann_nlist": 16, "ann_nprobe": 16},  # every list probed: must equal exact
])
def test_batched_top_k_with_filters_matches_brute_force(models_dir, config):
    model = load(models_dir, **config)
    rng = np.random.default_rng(11)
    jobs = random_jobs(model, rng, 64)
    results = RankEngine()(jobs)
    for job, ranked in zip(jobs, results):
        vec = job.vector if job.vector is not None else model.encode([job.history])[0]
        expected, scores = brute_force(model, vec, job.item_filter, job.history, job.purchased, job.k)
        got = ranked.indices.tolist()
        # float noise may swap exact ties; compare scores, then the sets of clear winners
        assert np.allclose(ranked.scores, scores[expected], atol=1e-4), (job.item_filter, job.k)
        assert got == expected and 0 not in got
        assert set(got) <= {i for i in range(1, N + 1)}


def test_narrow_filters_fall_back_to_exact_when_candidates_run_out(models_dir):
    model = load(models_dir, scorer="ann", ann_nlist=16, ann_nprobe=1)
    fallbacks = []
    engine = RankEngine(overfetch_min=1, on_fallback=lambda: fallbacks.append(1))
    item_filter = ItemFilter(include_categories=frozenset({"c"}), in_stock_only=True, exclude_purchased=False)
    vec = np.random.default_rng(2).normal(size=DIM).astype(np.float32)
    (ranked,) = engine([RankJob(model, ["i1"], set(), vec, item_filter, 50)])
    expected, _ = brute_force(model, vec, item_filter, ["i1"], set(), 50)
    assert ranked.indices.tolist() == expected and fallbacks


def test_one_bad_job_fails_alone(models_dir):
    model = load(models_dir, scorer="exact")
    good = RankJob(model, ["i1"], set(), None, ItemFilter(), 5)
    bad = RankJob(model, ["i1"], set(), None, ItemFilter(), 5)
    object.__setattr__(bad, "item_filter", None)  # a broken filter: user_exclusions raises
    results = RankEngine()([good, bad, good])
    assert isinstance(results[1], Exception)
    assert results[0].indices.tolist() == results[2].indices.tolist() and len(results[0].indices) == 5


def test_jobs_of_two_models_in_one_batch_are_scored_by_their_own_model(models_dir, tmp_path):
    first = load(models_dir, scorer="exact")
    publish_toy_bundle(tmp_path, IDS, -np.random.default_rng(0).normal(size=(N, DIM)))  # mirrored scores
    second = load(tmp_path, scorer="exact")
    vec = np.ones(DIM, dtype=np.float32)
    f = ItemFilter(in_stock_only=False, exclude_purchased=False)
    a, b = RankEngine()([RankJob(first, [], set(), vec, f, 3), RankJob(second, [], set(), vec, f, 3)])
    assert a.scores.tolist() == pytest.approx((first.items.embeddings @ vec)[a.indices].tolist())
    assert b.scores.tolist() == pytest.approx((second.items.embeddings @ vec)[b.indices].tolist())
    assert a.indices.tolist() != b.indices.tolist()


def test_shared_filters_and_repeated_histories_are_compiled_and_encoded_once(models_dir, monkeypatch):
    model = load(models_dir, scorer="exact")
    rng = np.random.default_rng(21)
    filters = [ItemFilter(), ItemFilter(exclude_seen=True, in_stock_only=False),
               ItemFilter(include_categories=frozenset({"a", "b"}), exclude_item_ids=frozenset({"i7", "i9"}))]
    histories = [[IDS[i] for i in rng.integers(0, N, 6)] for _ in range(4)]
    jobs = []
    for n in range(40):
        history = list(histories[n % 4])
        vec = rng.normal(size=DIM).astype(np.float32) if n % 5 == 0 else None
        jobs.append(RankJob(model, history, set(history[:n % 3]), vec, filters[n % 3], int(rng.integers(1, 40))))
    calls = []
    encode = type(model).encode
    monkeypatch.setattr(type(model), "encode", lambda self, h: calls.append(len(h)) or encode(self, h))
    results = RankEngine()(jobs)
    assert calls == [4]  # 32 jobs to encode, 4 distinct histories, one encoder call
    for job, ranked in zip(jobs, results):
        vec = job.vector if job.vector is not None else encode(model, [job.history])[0]
        expected, scores = brute_force(model, vec, job.item_filter, job.history, job.purchased, job.k)
        assert ranked.indices.tolist() == expected
        assert np.allclose(ranked.scores, scores[expected], atol=1e-4)
