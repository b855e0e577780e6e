from collections import Counter

from services.ingest.datasets import read_item_attributes, read_sequences
from services.ingest.synthetic import SyntheticConfig, generate, write_dataset

SMALL = SyntheticConfig(users=300, items=200, categories=8, seed=3)


def test_same_seed_same_dataset():
    a, b = generate(SMALL), generate(SMALL)
    assert a.sequences == b.sequences and a.catalog == b.catalog
    assert generate(SyntheticConfig(users=300, items=200, categories=8, seed=4)).sequences != a.sequences


def test_shape():
    ds = generate(SMALL)
    assert len(ds.sequences) == 300
    lengths = [len(s) for s in ds.sequences.values()]
    assert min(lengths) >= SMALL.min_sessions * SMALL.min_session_len
    assert max(lengths) <= SMALL.max_sessions * SMALL.max_session_len
    ids = {it["item_id"] for it in ds.catalog}
    assert len(ids) == 200
    assert all(item in ids for seq in ds.sequences.values() for item in seq)
    item = ds.catalog[0]
    assert set(item) == {"item_id", "title", "category", "brand", "price", "in_stock", "attributes"}


def test_popularity_is_skewed_and_sessions_follow_categories():
    ds = generate(SMALL)
    counts = Counter(i for seq in ds.sequences.values() for i in seq)
    top = sum(c for _, c in counts.most_common(20))
    assert top / sum(counts.values()) > 0.25  # 10% of the items get far more than 10% of the events
    cat = {it["item_id"]: it["category"] for it in ds.catalog}
    same = total = 0
    for seq in ds.sequences.values():
        for a, b in zip(seq, seq[1:]):
            same += cat[a] == cat[b]
            total += 1
    assert same / total > 0.6  # learnable structure: consecutive items share a category


def test_written_files_read_back(tmp_path):
    ds = generate(SMALL)
    paths = write_dataset(ds, tmp_path)
    assert read_sequences(paths["sequences"]) == ds.sequences
    assert read_item_attributes(paths["attributes"]) == ds.attributes
    assert len(paths["catalog"].read_text().splitlines()) == 200
