"""API tokens: parsing the client configuration, and the guard's answers (no server: the
interceptor's side is tests/integration/test_gateway_security.py)."""
import hashlib
import json

import grpc
import pytest

from services.common.auth import MethodLimit, TokenConfigError, TokenGuard, parse_clients
from services.common.errors import DomainError, RETRY_AFTER_METADATA

METHODS = ("Recommend", "TrackEvents")
LIMITS = ("requests", "events")
WEB, INGEST = "w" * 32, "i" * 32


def config(**overrides) -> str:
    clients = [
        {"name": "web", "tokens": [WEB], "methods": ["Recommend"], "limits": {"requests": {"per_s": 1, "burst": 2}}},
        {"name": "ingest", "tokens_sha256": [hashlib.sha256(INGEST.encode()).hexdigest()], "methods": ["*"],
         "limits": {"events": {"per_s": 10, "burst": 5}}},
    ]
    return json.dumps({"clients": clients, **overrides})


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def guard(clock=None, limited=None):
    return TokenGuard(parse_clients(config(), "tokens.json", METHODS, LIMITS), ["pkg.Svc"],
                      {"Recommend": MethodLimit("requests"),
                       "TrackEvents": MethodLimit("events", lambda request: request)},
                      on_limited=lambda client, method: limited.append((client, method)) if limited is not None else None,
                      clock=clock or Clock())


def call(g: TokenGuard, method: str, token: str | None, request=1):
    method_guard = g.for_method(f"/pkg.Svc/{method}")
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
    method_guard.admit(method_guard.authenticate(metadata), request)


def code_of(fn, *args) -> grpc.StatusCode:
    with pytest.raises(DomainError) as err:
        fn(*args)
    return err.value.code


def test_only_the_protected_services_are_guarded():
    assert guard().for_method("/grpc.health.v1.Health/Check") is None
    assert guard().for_method("/pkg.Svc/Recommend") is not None


def test_missing_unknown_and_malformed_tokens_are_unauthenticated():
    g = guard()
    assert code_of(call, g, "Recommend", None) == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(call, g, "Recommend", "x" * 32) == grpc.StatusCode.UNAUTHENTICATED
    method_guard = g.for_method("/pkg.Svc/Recommend")
    assert code_of(method_guard.authenticate, (("authorization", f"Basic {WEB}"),)) == grpc.StatusCode.UNAUTHENTICATED


def test_a_known_token_is_its_client_and_hashed_tokens_work_alike():
    call(guard(), "Recommend", WEB)
    call(guard(), "TrackEvents", INGEST)
    assert guard().for_method("/pkg.Svc/Recommend").authenticate(
        (("authorization", f"bearer {WEB}"),)).name == "web"  # the scheme is case-insensitive


def test_a_method_the_client_may_not_call_is_permission_denied():
    assert code_of(call, guard(), "TrackEvents", WEB) == grpc.StatusCode.PERMISSION_DENIED


def test_rate_limits_refuse_with_a_retry_hint_and_are_counted_by_client():
    clock, limited = Clock(), []
    g = guard(clock, limited)
    call(g, "Recommend", WEB)
    call(g, "Recommend", WEB)
    with pytest.raises(DomainError) as err:
        call(g, "Recommend", WEB)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(err.value.trailing_metadata)[RETRY_AFTER_METADATA] == "1000"
    assert "retry after 1000 ms" in err.value.message and "web" in err.value.message
    assert limited == [("web", "Recommend")]
    clock.now += 1.0
    call(g, "Recommend", WEB)


def test_events_cost_their_number_and_a_request_over_the_burst_is_invalid():
    clock = Clock()
    g = guard(clock)
    call(g, "TrackEvents", INGEST, request=5)
    with pytest.raises(DomainError) as err:
        call(g, "TrackEvents", INGEST, request=1)
    assert dict(err.value.trailing_metadata)[RETRY_AFTER_METADATA] == "100"  # 1 event at 10/s
    assert code_of(call, g, "TrackEvents", INGEST, 6) == grpc.StatusCode.INVALID_ARGUMENT
    call(g, "Recommend", INGEST, 1000)  # no "requests" limit for this client: unlimited


@pytest.mark.parametrize("doc, message", [
    ({"clients": []}, "non-empty \"clients\" list"),
    ({"clients": [{"name": "a", "tokens": [WEB], "methods": ["*"]},
                  {"name": "a", "tokens": [INGEST], "methods": ["*"]}]}, "appears twice"),
    ({"clients": [{"name": "a", "tokens": [WEB], "methods": ["*"]},
                  {"name": "b", "tokens": [WEB], "methods": ["*"]}]}, "also 'a'"),
    ({"clients": [{"name": "a", "methods": ["*"]}]}, "has no tokens"),
    ({"clients": [{"name": "a", "tokens_sha256": ["abc"], "methods": ["*"]}]}, "64 hex digits"),
    ({"clients": [{"name": "a", "tokens": [WEB], "methods": ["*"], "limits": {"bytes": {"per_s": 1}}}]},
     "may only name"),
    ({"clients": [{"name": "a", "token": WEB, "methods": ["*"]}]}, "unknown keys"),
])
def test_bad_configurations_say_what_is_wrong(doc, message):
    with pytest.raises(TokenConfigError, match=message):
        parse_clients(json.dumps(doc), "tokens.json", METHODS, LIMITS)
