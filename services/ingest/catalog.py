"""Catalog items from files: a JSONL of CatalogItem documents, or an item→attributes JSON."""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping

from google.protobuf import json_format
from shopstream.catalog.v1 import catalog_pb2

from services.ingest.datasets import read_item_attributes


def catalog_from_docs(docs: Iterable[Mapping]) -> list[catalog_pb2.CatalogItem]:
    """Dicts in the proto JSON mapping (either field-name style) → CatalogItem messages."""
    return [json_format.ParseDict(dict(d), catalog_pb2.CatalogItem(), ignore_unknown_fields=True) for d in docs]


def catalog_from_jsonl(path: str | os.PathLike[str]) -> list[catalog_pb2.CatalogItem]:
    with open(path, encoding="utf-8") as f:
        return catalog_from_docs(json.loads(line) for line in f if line.strip())


def catalog_from_attributes(path: str | os.PathLike[str]) -> list[catalog_pb2.CatalogItem]:
    """Datasets like Amazon Beauty ship only attribute ids per item: every item is in stock."""
    return [
        catalog_pb2.CatalogItem(item_id=item, title=f"item {item}", in_stock=True, attributes=[str(a) for a in attrs])
        for item, attrs in read_item_attributes(path).items()
    ]
