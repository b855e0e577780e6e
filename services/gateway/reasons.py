"""The reason shown beside each recommended item: its kind, the item that explains it (with its
title from the catalog) and a short text a storefront can show as is."""
from __future__ import annotations

from shopstream.gateway.v1 import gateway_pb2
from shopstream.ranker.v1 import ranker_pb2

from services.common.stores.catalog import CatalogSnapshot


def _title(catalog: CatalogSnapshot, item_id: str) -> str:
    item = catalog.items.get(item_id)
    return item.title if item is not None and item.title else ""


def _named(catalog: CatalogSnapshot, item_id: str) -> str:
    return _title(catalog, item_id) or item_id


def personalized(scored: ranker_pb2.ScoredItem, catalog: CatalogSnapshot) -> gateway_pb2.Reason:
    """From the ranker's evidence: the history item nearest to this one in the model's space."""
    evidence = scored.reason_item_id
    if scored.new_arrival:
        text = f"New arrival, for fans of {_named(catalog, evidence)}" if evidence else "New arrival"
        return gateway_pb2.Reason(kind=gateway_pb2.REASON_KIND_NEW_ARRIVAL, evidence_item_id=evidence,
                                  evidence_title=_title(catalog, evidence), text=text)
    if not evidence:  # a history the model does not know: nothing to cite
        return gateway_pb2.Reason(kind=gateway_pb2.REASON_KIND_BECAUSE_YOU_INTERACTED, text="Picked for you")
    text = (f"Because you showed interest in {_named(catalog, evidence)}" if evidence != scored.item_id
            else "You showed interest in it")  # an item of the history itself (filters.exclude_seen unset)
    return gateway_pb2.Reason(kind=gateway_pb2.REASON_KIND_BECAUSE_YOU_INTERACTED, evidence_item_id=evidence,
                              evidence_title=_title(catalog, evidence), text=text)


def trending(item_id: str, catalog: CatalogSnapshot) -> gateway_pb2.Reason:
    category = catalog.category(item_id)
    return gateway_pb2.Reason(kind=gateway_pb2.REASON_KIND_TRENDING_IN_CATEGORY,
                              text=f"Trending in {category}" if category else "Trending now")


def filler() -> gateway_pb2.Reason:
    return gateway_pb2.Reason(kind=gateway_pb2.REASON_KIND_FILLER, text="Popular in the shop")


def pinned() -> gateway_pb2.Reason:
    return gateway_pb2.Reason(kind=gateway_pb2.REASON_KIND_PINNED, text="Featured")


def similar_to(item_id: str, catalog: CatalogSnapshot) -> gateway_pb2.Reason:
    return gateway_pb2.Reason(kind=gateway_pb2.REASON_KIND_SIMILAR_TO, evidence_item_id=item_id,
                              evidence_title=_title(catalog, item_id), text=f"Similar to {_named(catalog, item_id)}")
