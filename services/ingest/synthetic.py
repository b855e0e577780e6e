"""A seeded synthetic shop: users with category tastes, Zipf-popular items, sessions.

Sequences are learnable on purpose: a user's sessions mostly stay in the user's
preferred categories, and within a session a shopper often moves on to the
item's fixed "successor" in the same category (think: the next volume, the
matching accessory). A sequential model can learn those transitions; item
popularity alone cannot, so it is a fair check that a model beats popularity.
"""
from __future__ import annotations

import itertools
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from services.ingest.datasets import write_sequences

SEQUENCES_FILE = "sequences.txt"
CATALOG_FILE = "catalog.jsonl"
ATTRIBUTES_FILE = "attributes.json"


@dataclass(frozen=True)
class SyntheticConfig:
    users: int = 2000
    items: int = 1000
    categories: int = 20
    brands: int = 50
    seed: int = 7
    min_sessions: int = 1
    max_sessions: int = 4
    min_session_len: int = 2
    max_session_len: int = 8
    zipf_exponent: float = 1.1
    follow_successor: float = 0.6  # chance the next item in a session is the current one's successor
    preferred_categories: int = 2
    stay_in_preferred: float = 0.85


@dataclass
class SyntheticDataset:
    sequences: dict[str, list[str]]
    catalog: list[dict] = field(default_factory=list)
    # The ground truth the sequences were drawn from (the shopper simulator's tastes):
    # each user's preferred categories (as drawn, a category may repeat), each item's
    # popularity weight within its category (1.0 for the category's most popular item)
    # and each item's successor.
    preferences: dict[str, list[str]] = field(default_factory=dict)
    popularity: dict[str, float] = field(default_factory=dict)
    successors: dict[str, str] = field(default_factory=dict)

    @property
    def attributes(self) -> dict[str, list[str]]:
        return {it["item_id"]: list(it["attributes"]) for it in self.catalog}


def _cum(weights: list[float]) -> list[float]:
    return list(itertools.accumulate(weights))


def generate(cfg: SyntheticConfig = SyntheticConfig()) -> SyntheticDataset:
    """Build the dataset; the same config (seed included) always gives the same output."""
    rng = random.Random(cfg.seed)
    item_ids = [str(i) for i in range(1, cfg.items + 1)]
    cats = [f"c{c:02d}" for c in range(cfg.categories)]
    by_cat: dict[str, list[str]] = {c: [] for c in cats}
    catalog = []
    for item in item_ids:
        cat = rng.choice(cats)
        brand = f"b{rng.randrange(cfg.brands):03d}"
        by_cat[cat].append(item)
        catalog.append({
            "item_id": item,
            "title": f"{cat.upper()} product {item}",
            "category": cat,
            "brand": brand,
            "price": round(rng.uniform(2.0, 200.0), 2),
            "in_stock": rng.random() > 0.05,
            "attributes": [f"cat:{cat}", f"brand:{brand}"],
        })
    cats = [c for c in cats if by_cat[c]]
    # Popularity: Zipf over a random rank order within each category.
    cat_cum: dict[str, list[float]] = {}
    successor: dict[str, str] = {}
    popularity: dict[str, float] = {}
    preferences: dict[str, list[str]] = {}
    for c in cats:
        members = by_cat[c]
        rng.shuffle(members)
        cat_cum[c] = _cum([1.0 / (rank + 1) ** cfg.zipf_exponent for rank in range(len(members))])
        popularity.update((m, 1.0 / (rank + 1) ** cfg.zipf_exponent) for rank, m in enumerate(members))
        order = members[:]
        rng.shuffle(order)
        for a, b in zip(order, order[1:] + order[:1]):
            successor[a] = b
    cat_weights = _cum([1.0 / (r + 1) ** 0.5 for r in range(len(cats))])

    sequences: dict[str, list[str]] = {}
    for u in range(1, cfg.users + 1):
        liked = rng.choices(cats, cum_weights=cat_weights, k=cfg.preferred_categories)
        preferences[f"u{u}"] = list(liked)
        seq: list[str] = []
        for _ in range(rng.randint(cfg.min_sessions, cfg.max_sessions)):
            cat = rng.choice(liked) if rng.random() < cfg.stay_in_preferred else rng.choice(cats)
            item = rng.choices(by_cat[cat], cum_weights=cat_cum[cat])[0]
            for _ in range(rng.randint(cfg.min_session_len, cfg.max_session_len)):
                seq.append(item)
                if rng.random() < cfg.follow_successor:
                    item = successor[item]
                else:
                    item = rng.choices(by_cat[cat], cum_weights=cat_cum[cat])[0]
        sequences[f"u{u}"] = seq
    return SyntheticDataset(sequences=sequences, catalog=catalog, preferences=preferences,
                            popularity=popularity, successors=dict(successor))


def write_dataset(ds: SyntheticDataset, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write sequences.txt (sequence-file format), catalog.jsonl and attributes.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"sequences": out / SEQUENCES_FILE, "catalog": out / CATALOG_FILE, "attributes": out / ATTRIBUTES_FILE}
    write_sequences(paths["sequences"], ds.sequences)
    with open(paths["catalog"], "w", encoding="utf-8") as f:
        for item in ds.catalog:
            f.write(json.dumps(item, sort_keys=True) + "\n")
    paths["attributes"].write_text(json.dumps(ds.attributes), encoding="utf-8")
    return paths
