"""A request's merchandising: a bound filter expression, boosts, diversity and a category cap.

The gateway builds it from a RecommendRequest (resolving the named expression) and sends it
on to the ranker in the RankRequest; the ranker rebuilds it from there (``from_rank_request``).
Both validate with the same functions, so a bad request fails the same way at either.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
from google.protobuf import json_format, struct_pb2
from shopstream.ranker.v1 import ranker_pb2

from services.common.errors import InvalidArgument
from services.contract.limits import MAX_ID_CHARS, MAX_TEXT_CHARS, check_list
from services.rules.evaluate import Interactions, ItemTable, eligible
from services.rules.language import BoundExpression
from services.rules.registry import parsed

BOOST_FIELDS = ("category", "brand", "item_id")
MAX_BOOSTS = 20
MAX_BOOST_VALUES = 1000
MAX_BOOST_WEIGHT = 1e6


@dataclass(frozen=True)
class Boost:
    field: str
    values: frozenset[str]
    weight: float


@dataclass(frozen=True)
class Merchandising:
    expression: BoundExpression | None = None
    boosts: tuple[Boost, ...] = ()
    diversity: float = 0.0
    max_per_category: int = 0
    params: struct_pb2.Struct = field(default_factory=struct_pb2.Struct, compare=False, repr=False)

    @property
    def reranks(self) -> bool:
        return self.diversity > 0 or self.max_per_category > 0

    def eligible(self, table: ItemTable, interactions: Interactions) -> np.ndarray | None:
        """bool [N] of the expression over ``table`` (None: no expression, everything passes)."""
        return eligible(self.expression, table, interactions) if self.expression is not None else None

    def boost(self, table: ItemTable) -> np.ndarray | None:
        """float32 [N] to add to the scores (None: no boosts)."""
        if not self.boosts:
            return None
        out = np.zeros(len(table), dtype=np.float32)
        for b in self.boosts:
            out += np.float32(b.weight) * table.matches(b.field, b.values)
        return out

    def fill(self, request: ranker_pb2.RankRequest) -> ranker_pb2.RankRequest:
        """Carry this onto a RankRequest (the ranker rebuilds it with ``from_rank_request``)."""
        if self.expression is not None:
            request.filter_expression = self.expression.expression.text
            request.filter_params.CopyFrom(self.params)
        for b in self.boosts:
            request.boosts.add(field=b.field, values=sorted(b.values), weight=b.weight)
        request.diversity = self.diversity
        request.max_per_category = self.max_per_category
        return request


def bind(text: str, params: struct_pb2.Struct) -> BoundExpression:
    """Parse (cached) and bind ``params``; InvalidArgument (with the position) when wrong."""
    return parsed(text).bind(json_format.MessageToDict(params))


def check_boosts(field_name: str, boosts: Iterable) -> tuple[Boost, ...]:
    boosts = list(boosts)
    if len(boosts) > MAX_BOOSTS:
        raise InvalidArgument(f"{field_name} has {len(boosts)} entries, at most {MAX_BOOSTS} allowed")
    out = []
    for i, b in enumerate(boosts):
        where = f"{field_name}[{i}]"
        if b.field not in BOOST_FIELDS:
            raise InvalidArgument(f"{where}.field must be one of {', '.join(BOOST_FIELDS)}, got {b.field[:80]!r}")
        if not math.isfinite(b.weight) or abs(b.weight) > MAX_BOOST_WEIGHT:
            raise InvalidArgument(f"{where}.weight must be a finite number within ±{MAX_BOOST_WEIGHT:g}")
        check_list(f"{where}.values", b.values, MAX_BOOST_VALUES,
                   MAX_ID_CHARS if b.field == "item_id" else MAX_TEXT_CHARS)
        if not b.values:
            raise InvalidArgument(f"{where}.values is empty")
        out.append(Boost(b.field, frozenset(b.values), float(b.weight)))
    return tuple(out)


def check_diversity(diversity: float, max_per_category: int) -> None:
    if not (0.0 <= diversity <= 1.0):  # also refuses NaN
        raise InvalidArgument(f"diversity must be between 0 and 1, got {diversity}")
    if max_per_category < 0:
        raise InvalidArgument(f"max_per_category must be 0 (no cap) or more, got {max_per_category}")


def from_rank_request(request: ranker_pb2.RankRequest) -> Merchandising | None:
    """What a RankRequest asks beyond its ItemFilter; None when nothing (the fast path)."""
    if not (request.filter_expression or request.boosts or request.diversity or request.max_per_category):
        return None
    check_diversity(request.diversity, request.max_per_category)
    expression = bind(request.filter_expression, request.filter_params) if request.filter_expression else None
    return Merchandising(expression, check_boosts("boosts", request.boosts), request.diversity,
                         request.max_per_category)
