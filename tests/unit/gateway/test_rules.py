import pytest
from shopstream.gateway.v1 import gateway_pb2

from services.common.errors import InvalidArgument
from services.gateway import rules


def test_filter_defaults_when_unset():
    f = rules.item_filter(gateway_pb2.RecommendFilters(), max_exclude_ids=10)
    assert f.in_stock_only is True
    assert f.exclude_purchased is True
    assert f.exclude_seen is False
    assert not f.include_categories and not f.exclude_item_ids


def test_explicit_false_overrides_a_true_default():
    f = rules.item_filter(gateway_pb2.RecommendFilters(in_stock_only=False, exclude_purchased=False,
                                                       exclude_seen=True, include_categories=["a"],
                                                       exclude_item_ids=["x"]), max_exclude_ids=10)
    assert (f.in_stock_only, f.exclude_purchased, f.exclude_seen) == (False, False, True)
    assert f.include_categories == {"a"} and f.exclude_item_ids == {"x"}
    ranker = f.to_proto()
    assert ranker.in_stock_only is False and ranker.exclude_seen is True
    assert list(ranker.include_categories) == ["a"] and list(ranker.exclude_item_ids) == ["x"]


def test_too_many_exclude_ids():
    with pytest.raises(InvalidArgument, match="filters.exclude_item_ids has 3 entries, at most 2 allowed"):
        rules.item_filter(gateway_pb2.RecommendFilters(exclude_item_ids=["a", "b", "c"]), max_exclude_ids=2)


@pytest.mark.parametrize("k,expected", [(0, 10), (1, 1), (100, 100)])
def test_k_defaulting(k, expected):
    assert rules.resolve_k(k, default_k=10, max_k=100) == expected


@pytest.mark.parametrize("k", [-1, 101])
def test_k_out_of_range(k):
    with pytest.raises(InvalidArgument, match="k must be between 1 and 100"):
        rules.resolve_k(k, default_k=10, max_k=100)

