"""The items a model can rank: its trained vocabulary, plus catalog items that
appeared after training and are embedded from their attributes alone.

Indices follow the bundle: 0 is padding, 1..N the trained items, N+1.. the new
ones. Rebuilt when the catalog brings items the model has not seen.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from services.common.bundle.model import ModelBundle
from services.common.stores.catalog import CatalogSnapshot


@dataclass(frozen=True)
class ServingItems:
    item_ids: list[str]  # item_ids[i-1] is index i
    embeddings: np.ndarray  # float32 [len(item_ids) + 1, dim], row 0 padding
    num_trained: int
    index_of: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index_of", {item: i for i, item in enumerate(self.item_ids, start=1)})

    @property
    def new_item_ids(self) -> list[str]:
        return self.item_ids[self.num_trained:]

    @classmethod
    def build(cls, bundle: ModelBundle, catalog: CatalogSnapshot) -> "ServingItems":
        """The bundle's items, plus every catalog item with attributes that it lacks (when it can embed them)."""
        new = cls.new_items(bundle, catalog)
        if not new:
            return cls(list(bundle.item_ids), bundle.item_embeddings, len(bundle.item_ids))
        vectors = bundle.embed_new_items([list(catalog.items[i].attributes) for i in new])
        return cls([*bundle.item_ids, *new], np.vstack([bundle.item_embeddings, vectors]), len(bundle.item_ids))

    @staticmethod
    def new_items(bundle: ModelBundle, catalog: CatalogSnapshot) -> list[str]:
        """Catalog items the model was not trained on and can embed, in a stable order."""
        if not bundle.supports_new_items:
            return []
        return sorted(i for i, item in catalog.items.items() if i not in bundle.index_of and item.attributes)
