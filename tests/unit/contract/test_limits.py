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
