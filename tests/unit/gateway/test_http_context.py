"""The HTTP API's stand-in for a gRPC ServicerContext, and its status mapping."""
from __future__ import annotations

import json

import grpc
import pytest
from multidict import CIMultiDict

from services.common.errors import InvalidArgument
from services.gateway.http_api import HTTP_STATUS, error_response, parse_json
from services.gateway.http_context import Aborted, HttpContext, timeout_from_headers
from shopstream.gateway.v1 import gateway_pb2


@pytest.mark.parametrize("headers, seconds", [
    ({}, None),
    ({"grpc-timeout": "150m"}, 0.15),
    ({"grpc-timeout": "2S"}, 2.0),
    ({"grpc-timeout": "1M"}, 60.0),
    ({"grpc-timeout": "500u"}, 0.0005),
    ({"grpc-timeout": "99999999n"}, 0.099999999),
    ({"x-request-timeout": "0.25"}, 0.25),
    ({"grpc-timeout": "1S", "x-request-timeout": "9"}, 1.0),  # gRPC's own header first
])
def test_the_deadline_comes_from_grpc_timeout_or_x_request_timeout(headers, seconds):
    assert timeout_from_headers(headers) == pytest.approx(seconds) if seconds else timeout_from_headers(headers) is None


@pytest.mark.parametrize("headers", [
    {"grpc-timeout": "soon"}, {"grpc-timeout": "150"}, {"grpc-timeout": "0m"}, {"grpc-timeout": "123456789m"},
    {"grpc-timeout": "-5S"}, {"x-request-timeout": "0"}, {"x-request-timeout": "-1"}, {"x-request-timeout": "nan"},
    {"x-request-timeout": "inf"}, {"x-request-timeout": "fast"},
])
def test_a_malformed_deadline_is_invalid_argument(headers):
    with pytest.raises(InvalidArgument):
        timeout_from_headers(headers)


async def test_the_context_answers_what_the_servicer_asks():
    # aiohttp's headers: case-insensitive, as HTTP's are
    context = HttpContext.from_headers(CIMultiDict({"Authorization": "Bearer t", "X-Request-Timeout": "10",
                                                    "Host": "h", "Content-Type": "application/json"}),
                                       peer="127.0.0.1")
    assert ("authorization", "Bearer t") in context.invocation_metadata()
    assert all(key not in ("host", "content-type") for key, _ in context.invocation_metadata())
    assert 9.0 < context.time_remaining() <= 10.0
    assert HttpContext.from_headers({}).time_remaining() is None
    with pytest.raises(Aborted) as aborted:
        await context.abort(grpc.StatusCode.NOT_FOUND, "gone")
    assert aborted.value.code == grpc.StatusCode.NOT_FOUND and aborted.value.message == "gone"


def test_every_grpc_code_has_an_http_status():
    assert set(HTTP_STATUS) == set(grpc.StatusCode)
    assert {code.name: HTTP_STATUS[code] for code in (
        grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION)} == {
        "INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504,
        "UNAUTHENTICATED": 401, "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400}


def test_a_rate_limit_error_says_when_to_retry():
    response = error_response(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", "rid",
                              (("retry-after-ms", "1500"),))
    assert response.status == 429
    assert response.headers["Retry-After"] == "2" and response.headers["retry-after-ms"] == "1500"
    assert json.loads(response.text) == {"error": {"code": "RESOURCE_EXHAUSTED", "message": "slow down",
                                                   "request_id": "rid"}}


@pytest.mark.parametrize("body", ["", "{}", '{"user_id": "u", "k": 3}', '{"userId": "u", "k": "3"}'])
def test_json_bodies_in_either_spelling(body):
    request = parse_json(body, gateway_pb2.RecommendRequest)
    assert request.user_id in ("", "u")


@pytest.mark.parametrize("body", ["[]", "null", "3", "{", '{"userId": 3}', '{"k": 1.5}', '{"nope": 1}',
                                  "[" * 100_000, '{"filters": {"filterParams": ' + '{"a": ' * 500 + "1" + "}" * 502])
def test_anything_but_the_messages_json_object_is_invalid_argument(body):
    with pytest.raises(InvalidArgument, match="not a valid shopstream.gateway.v1.RecommendRequest JSON message"):
        parse_json(body, gateway_pb2.RecommendRequest)
