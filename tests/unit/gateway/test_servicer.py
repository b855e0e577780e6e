"""How the gateway's store reads end: the client's deadline vs a store outage."""
import asyncio

import pytest

from services.common.errors import DeadlineExceeded, Unavailable
from services.gateway.metrics import gateway_metrics
from services.gateway.servicer import GatewayServicer
from services.gateway.settings import GatewaySettings


class Context:
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self):
        return self.remaining


def servicer(**settings) -> GatewayServicer:
    s = GatewaySettings(ranker_addr="127.0.0.1:1", auth="disabled", **settings)
    return GatewayServicer(s, None, None, None, None, None, gateway_metrics())


async def never():
    await asyncio.Event().wait()


async def failing():
    raise ConnectionError("connection refused")


async def test_a_read_cut_short_by_the_clients_deadline_is_deadline_exceeded():
    with pytest.raises(DeadlineExceeded):
        await servicer(redis_timeout_s=60)._store_call(never(), Context(0.005), "user state store unavailable")


async def test_no_time_left_is_deadline_exceeded_without_reading():
    read = never()
    with pytest.raises(DeadlineExceeded):
        await servicer()._store_call(read, Context(-0.001), "user state store unavailable")
    assert read.cr_frame is None  # closed, never started


async def test_a_read_over_the_gateways_own_bound_is_unavailable():
    with pytest.raises(Unavailable, match="user state store unavailable"):
        await servicer(redis_timeout_s=0.001)._store_call(never(), Context(60.0), "user state store unavailable")
    with pytest.raises(Unavailable):
        await servicer()._store_call(failing(), Context(None), "user state store unavailable")
