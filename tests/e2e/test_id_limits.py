"""One id limit end to end: the longest user id TrackEvents accepts is applied by the
features worker and personalised by Recommend; one character more is refused by both."""
from __future__ import annotations

import uuid

import grpc
import pytest
from shopstream.gateway.v1 import gateway_pb2

from services.contract.limits import MAX_ID_CHARS
from support.helpers import event, recommend, wait_for
from support.redis_state import user_snapshot

pytestmark = pytest.mark.e2e


def _longest_user_id() -> str:
    tag = uuid.uuid4().hex
    return tag + "u" * (MAX_ID_CHARS - len(tag))


def test_the_longest_accepted_user_id_works_everywhere(system, catalog_items):
    user = _longest_user_id()
    assert len(user) == MAX_ID_CHARS
    events = [event(user, catalog_items[0], "VIEW"), event(user, catalog_items[1], "CLICK")]
    for ev in events:
        ev.session_id = "s-long"  # the helper's session id is "s-<user>": over the limit on its own
    accepted = system.gateway.TrackEvents(gateway_pb2.TrackEventsRequest(events=events), timeout=10)
    assert accepted.accepted == 2

    applied = wait_for(lambda: (s := user_snapshot(system.redis, user))["history"] == catalog_items[:2] and s,
                       timeout=10.0)
    assert applied["counts"]["events"] == "2"

    answer = wait_for(
        lambda: (r := recommend(system.gateway, user, k=5)).strategy == gateway_pb2.STRATEGY_PERSONALIZED and r,
        timeout=10.0)
    assert len(answer.items) == 5
    assert answer.model_version == system.model_version


def test_one_character_more_is_refused_by_track_and_recommend(system, catalog_items):
    user = _longest_user_id() + "x"
    with pytest.raises(grpc.RpcError) as err:
        too_long = event(user, catalog_items[0], "VIEW")
        too_long.session_id = "s-long"
        system.gateway.TrackEvents(gateway_pb2.TrackEventsRequest(events=[too_long]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "user_id" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        recommend(system.gateway, user, k=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"at most {MAX_ID_CHARS}" in err.value.details()
