"""What a simulated shopper likes: the synthetic generator's ground truth, and its drift.

A shopper's affinity for an item is a number in [0, 1]: high for the categories the
generator drew for that user (scaled by the item's popularity within its category),
low for every other category, and high again for the "successor" of the last item the
shopper clicked (the transition the generator's sequences follow). After a drift the
preferred categories rotate to other categories, so a model trained before the drift
recommends what the shopper no longer wants.
"""
from __future__ import annotations

from dataclasses import dataclass

from services.ingest.synthetic import SyntheticDataset


@dataclass(frozen=True)
class TasteConfig:
    """How the ground truth becomes an affinity (all values in [0, 1])."""

    off_taste: float = 0.08  # affinity scale for a category the shopper does not prefer
    popularity_floor: float = 0.5  # the least popular item of a liked category still gets this share
    successor: float = 0.9  # affinity for the successor of the last clicked item


@dataclass(frozen=True)
class Catalog:
    """The item facts shoppers need: category, popularity within it, successor, price."""

    category: dict[str, str]
    popularity: dict[str, float]
    successors: dict[str, str]
    price: dict[str, float]
    categories: tuple[str, ...]

    @classmethod
    def from_dataset(cls, ds: SyntheticDataset) -> "Catalog":
        if not ds.popularity:
            raise ValueError("the dataset carries no ground truth (generate() fills preferences and popularity)")
        category = {it["item_id"]: it["category"] for it in ds.catalog}
        return cls(category=category, popularity=dict(ds.popularity), successors=dict(ds.successors),
                   price={it["item_id"]: float(it["price"]) for it in ds.catalog},
                   categories=tuple(sorted(set(category.values()))))


def rotate(categories: tuple[str, ...], liked: frozenset[str], shift: int) -> frozenset[str]:
    """Each liked category replaced by the one ``shift`` places further in the sorted list, or
    the next one after it that is neither liked before nor already taken, so that the new
    tastes share nothing with the old ones whenever there are enough categories."""
    index = {c: i for i, c in enumerate(categories)}
    n = len(categories)
    chosen: list[str] = []
    for c in sorted(liked, key=index.__getitem__):
        for step in range(n):
            candidate = categories[(index[c] + shift + step) % n]
            if candidate not in liked and candidate not in chosen:
                chosen.append(candidate)
                break
        else:  # every category is liked already: nothing new to drift to
            chosen.append(c)
    return frozenset(chosen)


@dataclass(frozen=True)
class Taste:
    """One shopper's preferred categories at some moment."""

    liked: frozenset[str]

    def affinity(self, catalog: Catalog, item_id: str, last_clicked: str | None, cfg: TasteConfig) -> float:
        """The shopper's true affinity for ``item_id`` in [0, 1] (0 for an item not in the catalog)."""
        category = catalog.category.get(item_id)
        if category is None:
            return 0.0
        pop = catalog.popularity.get(item_id, 0.0)
        base = cfg.popularity_floor + (1.0 - cfg.popularity_floor) * pop
        value = base if category in self.liked else cfg.off_taste * base
        if last_clicked is not None and catalog.successors.get(last_clicked) == item_id:
            value = max(value, cfg.successor)
        return value

    def drifted(self, catalog: Catalog, shift: int) -> "Taste":
        return Taste(rotate(catalog.categories, self.liked, shift))


def tastes_of(ds: SyntheticDataset) -> dict[str, Taste]:
    """Every generated user's taste before any drift."""
    return {user: Taste(frozenset(liked)) for user, liked in ds.preferences.items()}
