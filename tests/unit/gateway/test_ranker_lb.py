"""The gateway's target and service config for several ranker replicas."""
from __future__ import annotations

import json

import pytest

from services.gateway.ranker_client import channel_options, ranker_target


@pytest.mark.parametrize("addr, target", [
    ("ranker:50051", "ranker:50051"),
    ("dns:///ranker.shop.svc:50051", "dns:///ranker.shop.svc:50051"),
    ("ipv4:10.0.0.1:1,10.0.0.2:2", "ipv4:10.0.0.1:1,10.0.0.2:2"),
    ("127.0.0.1:1, 127.0.0.1:2,127.0.0.1:3", "ipv4:127.0.0.1:1,127.0.0.1:2,127.0.0.1:3"),
    ("[::1]:1,[::1]:2", "ipv6:[::1]:1,[::1]:2"),
])
def test_ranker_target(addr, target):
    assert ranker_target(addr) == target


def test_a_list_of_host_names_is_refused_naming_the_variable():
    with pytest.raises(ValueError, match="SHOPSTREAM_GATEWAY_RANKER_ADDR.*dns:///"):
        ranker_target("ranker-0:50051,ranker-1:50051")


def test_service_config_is_round_robin_with_one_retry_on_unavailable():
    options = dict(channel_options((("grpc.keepalive_time_ms", 1),)))
    assert options["grpc.keepalive_time_ms"] == 1
    config = json.loads(options["grpc.service_config"])
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    retry = config["methodConfig"][0]["retryPolicy"]
    assert retry["maxAttempts"] == 2 and retry["retryableStatusCodes"] == ["UNAVAILABLE"]
