"""One id limit for every service."""
import pytest

from services.common.errors import InvalidArgument
from services.contract.limits import MAX_ID_CHARS, check_id


def test_ids_within_the_limit_pass():
    assert check_id("user_id", "u1") == "u1"
    assert check_id("user_id", "x" * MAX_ID_CHARS) == "x" * MAX_ID_CHARS


def test_empty_and_long_ids_name_the_field():
    with pytest.raises(InvalidArgument, match="user_id is required"):
        check_id("user_id", "")
    with pytest.raises(InvalidArgument, match=f"item_id must be at most {MAX_ID_CHARS} characters"):
        check_id("item_id", "x" * (MAX_ID_CHARS + 1))


@pytest.mark.parametrize("field", ["include_categories", "exclude_categories"])
def test_filter_category_lists_are_capped_naming_the_field(field):
    from shopstream.gateway.v1 import gateway_pb2
    from shopstream.ranker.v1 import ranker_pb2

    from services.contract.limits import MAX_FILTER_CATEGORIES, check_filter

    for message in (gateway_pb2.RecommendFilters, ranker_pb2.ItemFilter):
        check_filter("filters", message(**{field: ["c"] * MAX_FILTER_CATEGORIES}))
        with pytest.raises(InvalidArgument, match=f"filters.{field} has 100001 entries, at most "
                                                  f"{MAX_FILTER_CATEGORIES} allowed"):
            check_filter("filters", message(**{field: ["c"] * 100_001}))


def test_filter_entries_are_bounded_in_length_and_ids_by_the_smaller_cap():
    from shopstream.ranker.v1 import ranker_pb2

    from services.contract.limits import MAX_FILTER_ITEM_IDS, MAX_TEXT_CHARS, check_filter

    with pytest.raises(InvalidArgument, match="filter.include_categories entries must be at most"):
        check_filter("filter", ranker_pb2.ItemFilter(include_categories=["c" * (MAX_TEXT_CHARS + 1)]))
    with pytest.raises(InvalidArgument, match=f"at most {MAX_FILTER_ITEM_IDS} allowed"):
        check_filter("filter", ranker_pb2.ItemFilter(exclude_item_ids=["i"] * (MAX_FILTER_ITEM_IDS + 1)),
                     max_item_ids=10 * MAX_FILTER_ITEM_IDS)
    with pytest.raises(InvalidArgument, match="at most 2 allowed"):
        check_filter("filter", ranker_pb2.ItemFilter(exclude_item_ids=["a", "b", "c"]), max_item_ids=2)
