"""The gateway's HTTP/JSON API (services/gateway/http_api.py) on a real gateway started by
``main.running`` beside its gRPC port, over a real ranker, embedded Redis and Kafka.

Each gRPC validation case of tests/integration/test_gateway_service.py is sent over both
transports: the HTTP status is the one mapped from the gRPC code and the JSON error
carries the same message, because both call the same servicer.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shlex
import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
from multidict import CIMultiDict
import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from shopstream.catalog.v1 import catalog_pb2
from shopstream.events.v1 import events_pb2
from shopstream.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from support.kafka import read_topic_async
from support.ranker_harness import ITEMS, add_history, catalog_items, ranker_server, vectors
from support.toy_bundle import publish_toy_bundle

from services.common.stores.catalog import RedisCatalogStore
from services.common.stores.user_state import RedisUserStateStore
from services.contract import topics
from services.contract.limits import MAX_ID_CHARS
from services.contract.producer import ensure_topics
from services.gateway import openapi
from services.gateway.http_api import HTTP_STATUS
from services.gateway.main import build, running
from services.gateway.settings import GatewaySettings
from services.stack.embedded import free_port

pytestmark = pytest.mark.integration

HANG_GUARD_S = 30
REPO = Path(__file__).resolve().parents[2]
STOREFRONT, INGEST, LIMITED = "s" * 40, "i" * 40, "l" * 40
ORIGIN = "https://shop.example"


@pytest.fixture
async def world(tmp_path, redis_client):
    await RedisCatalogStore(redis_client).upsert(catalog_items())
    await add_history(RedisUserStateStore(redis_client), "buyer", ["h1", "h2"])
    publish_toy_bundle(tmp_path / "models", ITEMS, vectors())
    return tmp_path / "models"


def settings_for(ranker_addr: str, redis_url: str, **overrides) -> GatewaySettings:
    overrides = {"readiness_interval_s": 0.05, "grace_s": 0.0, "redis_timeout_s": 5.0, "auth": "disabled",
                 "ranker_timeout_s": HANG_GUARD_S, "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}",
                 **overrides}
    return GatewaySettings(addr="127.0.0.1:0", http_addr="127.0.0.1:0", ranker_addr=ranker_addr,
                           redis_url=redis_url, **overrides)


class Gateway:
    """A gateway on both transports: its HTTP base URL, a gRPC stub, an HTTP session."""

    def __init__(self, url: str, grpc_stub, health, session: aiohttp.ClientSession) -> None:
        self.url, self.stub, self.health, self.session = url, grpc_stub, health, session

    async def post(self, path: str, body, headers=None) -> tuple[int, dict, dict]:
        data = body if isinstance(body, (str, bytes)) else json.dumps(body)
        async with self.session.post(self.url + path, data=data, headers=headers or {}) as resp:
            return resp.status, await resp.json(), CIMultiDict(resp.headers)

    async def get(self, path: str, headers=None) -> tuple[int, dict]:
        async with self.session.get(self.url + path, headers=headers or {}) as resp:
            return resp.status, await resp.json()


@contextlib.asynccontextmanager
async def gateway(settings: GatewaySettings, hold_catalog: asyncio.Event | None = None):
    """The gateway through main.running (its own build); with ``hold_catalog``, its first
    catalog load waits for that event (so a test can see it NOT_SERVING first)."""
    deps = build(settings)
    if hold_catalog is not None:
        refresh = deps.catalog.refresh

        async def held_refresh():
            await hold_catalog.wait()
            return await refresh()

        deps.catalog.refresh = held_refresh
    async with running(settings, deps) as gw, \
            grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel, \
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HANG_GUARD_S)) as session:
        assert gw.http_port
        yield Gateway(f"http://127.0.0.1:{gw.http_port}", gateway_pb2_grpc.GatewayServiceStub(channel),
                      health_pb2_grpc.HealthStub(channel), session)


async def until_ready(gw: Gateway) -> None:
    async for reply in gw.health.Watch(health_pb2.HealthCheckRequest(), timeout=HANG_GUARD_S):
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            return
    pytest.fail("the health stream ended before SERVING")


async def grpc_error(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


def event_json(n: int, **fields) -> dict:
    return {"eventId": f"http-{n}", "userId": "shopper", "itemId": "s1", "type": "EVENT_TYPE_VIEW",
            "occurredAt": "2023-11-14T22:13:20Z", **fields}


async def test_http_and_grpc_give_the_same_answers_statuses_and_messages(world, redis_url):
    async with ranker_server(world, redis_url) as addr:
        hold = asyncio.Event()
        settings = settings_for(addr, redis_url, prometheus_url="http://127.0.0.1:9090")
        async with gateway(settings, hold_catalog=hold) as gw:
            # Readiness is gRPC's health status: NOT_SERVING until the catalog loaded, on both.
            status, body = await gw.get("/healthz")
            assert (status, body) == (503, {"status": "NOT_SERVING"})
            assert (await gw.health.Check(health_pb2.HealthCheckRequest())).status == \
                health_pb2.HealthCheckResponse.NOT_SERVING
            assert (await gw.get("/livez"))[0] == 200
            hold.set()
            await until_ready(gw)
            assert await gw.get("/healthz") == (200, {"status": "SERVING"})

            # Personalised over both transports; the JSON is the proto3 JSON mapping of the same answer.
            status, body, headers = await gw.post("/v1/recommend", {"userId": "buyer", "k": 3},
                                                  {"X-Request-Id": "req-42"})
            assert status == 200 and headers["x-request-id"] == "req-42"
            grpc_answer = await gw.stub.Recommend(gateway_pb2.RecommendRequest(user_id="buyer", k=3))
            assert body["strategy"] == "STRATEGY_PERSONALIZED" and body["degraded"] is False
            assert [i["itemId"] for i in body["items"]] == [i.item_id for i in grpc_answer.items]
            assert body["modelVersion"] == grpc_answer.model_version
            # proto field names are accepted too, and filters apply as over gRPC
            status, body, _ = await gw.post("/v1/recommend", {"user_id": "buyer", "k": 2, "filters": {
                "include_categories": ["bags"]}})
            assert status == 200 and [i["itemId"][0] for i in body["items"]] == ["b", "b"]

            status, body, _ = await gw.post("/v1/similar-items", {"itemId": "b1", "k": 3})
            assert status == 200 and {i["itemId"] for i in body["items"]} == {"b2", "b3", "b4"}

            # Every validation case of the gRPC test: the same message, the mapped status.
            cases = [
                ("Recommend", {"userId": "", "k": 3}, "user_id is required"),
                ("Recommend", {"userId": "x" * (MAX_ID_CHARS + 1), "k": 3},
                 f"user_id must be at most {MAX_ID_CHARS} characters"),
                ("Recommend", {"userId": "u", "k": 101}, "k must be between 1 and 100"),
                ("Recommend", {"userId": "u", "filters": {"excludeItemIds": [str(i) for i in range(501)]}},
                 "at most 500 allowed"),
                ("Recommend", {"userId": "u", "filters": {"includeCategories": ["shoes"] * 100_000}},
                 "filters.include_categories has 100000 entries, at most 100 allowed"),
                ("Recommend", {"userId": "u", "filters": {"excludeCategories": ["x" * 2000]}},
                 "filters.exclude_categories entries must be at most 1024"),
                ("SimilarItems", {"itemId": "b1", "filters": {"includeCategories": ["bags"] * 101}},
                 "filters.include_categories has 101 entries"),
                ("SimilarItems", {"itemId": "no-such-item", "k": 3}, ""),
            ]
            paths = {name: path for path, name in openapi.RPC_PATHS.items()}
            for method, body_in, message in cases:
                request_cls = {"Recommend": gateway_pb2.RecommendRequest,
                               "SimilarItems": gateway_pb2.SimilarItemsRequest}[method]
                err = await grpc_error(getattr(gw.stub, method)(json_format.ParseDict(body_in, request_cls())))
                status, body, _ = await gw.post(paths[method], body_in)
                assert status == HTTP_STATUS[err.code()], (method, body_in, body)
                assert body["error"]["code"] == err.code().name
                assert body["error"]["message"] == err.details() and message in body["error"]["message"]
                assert body["error"]["request_id"]
            assert status == 404 and body["error"]["code"] == "NOT_FOUND"  # the unknown item, last

            # Not valid JSON for the message: INVALID_ARGUMENT as for undecodable gRPC bytes.
            for raw in ("{not json", '{"userId": "u", "noSuchField": 1}', '{"k": "many"}', "[]"):
                status, body, _ = await gw.post("/v1/recommend", raw)
                assert status == 400 and body["error"]["code"] == "INVALID_ARGUMENT", raw
                assert "not a valid shopstream.gateway.v1.RecommendRequest JSON message" in body["error"]["message"]

            # Deadlines: a malformed header is a bad request; a spent one is never UNAVAILABLE.
            status, body, _ = await gw.post("/v1/recommend", {"userId": "buyer"}, {"grpc-timeout": "soon"})
            assert status == 400 and "grpc-timeout" in body["error"]["message"]
            for headers in ({"grpc-timeout": "1n"}, {"X-Request-Timeout": "0.000001"}):
                status, body, _ = await gw.post("/v1/recommend", {"userId": "buyer", "k": 3}, headers)
                assert (status == 504 and body["error"]["code"] == "DEADLINE_EXCEEDED") or \
                    (status == 200 and body["degraded"]), body

            # The catalog the demo page shows, and the OpenAPI document.
            status, body = await gw.get("/v1/catalog?category=hats&limit=3")
            assert status == 200 and body["total"] == 4 and [i["itemId"] for i in body["items"]] == ["h1", "h2", "h3"]
            assert {c["name"]: c["items"] for c in body["categories"]} == {"bags": 4, "hats": 4, "shoes": 4}
            status, body = await gw.get("/v1/catalog?ids=s2,nope,b1")
            assert [i["itemId"] for i in body["items"]] == ["s2", "b1"]
            assert (await gw.get("/v1/catalog?limit=0"))[0] == 400
            status, body = await gw.get("/openapi.json")
            assert status == 200 and set(openapi.RPC_PATHS) <= set(body["paths"])
            assert (await gw.get("/v1/demo-config"))[1] == {"prometheus_url": "http://127.0.0.1:9090",
                                                             "auth_required": False}
            async with gw.session.get(gw.url + "/") as resp:
                assert resp.status == 200 and "shopstream" in await resp.text()


async def test_track_events_over_http(world, redis_url, kafka_bootstrap):
    await asyncio.to_thread(ensure_topics, kafka_bootstrap, 1)
    async with ranker_server(world, redis_url) as addr, \
            gateway(settings_for(addr, redis_url, kafka_bootstrap_servers=kafka_bootstrap)) as gw:
        await until_ready(gw)
        status, body, _ = await gw.post("/v1/events", {"events": [event_json(1), event_json(2, userId="")]})
        assert status == 400 and "events[1]" in body["error"]["message"] and \
            "missing_user_id" in body["error"]["message"]
        too_many = {"events": [event_json(100 + n) for n in range(501)]}
        status, body, _ = await gw.post("/v1/events", too_many)
        assert status == 400 and body["error"]["message"] == "at most 500 events per request, got 501"
        status, body, _ = await gw.post("/v1/events", {"events": [
            event_json(3, type="EVENT_TYPE_CLICK", recommendationId="rec-1", position=2), event_json(4)]})
        assert (status, body) == (200, {"accepted": 2})
        assert (await gw.post("/v1/events", {}))[:2] == (200, {"accepted": 0})
    by_id = {}
    for record in await read_topic_async(kafka_bootstrap, topics.EVENTS):
        with contextlib.suppress(DecodeError):  # other tests publish garbage on purpose
            event = events_pb2.Event.FromString(record.value)
            by_id[event.event_id] = event
    assert "http-3" in by_id and "http-4" in by_id
    assert by_id["http-3"].recommendation_id == "rec-1" and by_id["http-3"].position == 2
    assert "http-1" not in by_id and "http-100" not in by_id  # nothing of the rejected requests


async def test_event_log_down_is_503(world, redis_url):
    async with ranker_server(world, redis_url) as addr, \
            gateway(settings_for(addr, redis_url, kafka_timeout_s=0.5)) as gw:  # no broker at the address
        await until_ready(gw)
        status, body, _ = await gw.post("/v1/events", {"events": [event_json(9)]})
        assert status == 503 and body["error"]["code"] == "UNAVAILABLE"


def tokens(tmp_path) -> Path:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"clients": [
        {"name": "storefront", "tokens": [STOREFRONT], "methods": ["Recommend", "SimilarItems"]},
        {"name": "ingest", "tokens": [INGEST], "methods": ["TrackEvents"]},
        {"name": "limited", "tokens": [LIMITED], "methods": ["*"],
         "limits": {"requests": {"per_s": 0.001, "burst": 2}}},
    ]}))
    return path


async def test_tokens_rate_limits_and_cors_apply_over_http(world, redis_url, tmp_path):
    async with ranker_server(world, redis_url) as addr, \
            gateway(settings_for(addr, redis_url, auth="required", tokens_file=tokens(tmp_path),
                                 http_cors_origins=ORIGIN)) as gw:
        await until_ready(gw)
        assert (await gw.get("/healthz"))[0] == 200  # health needs no token, as over gRPC
        request = {"userId": "buyer", "k": 2}
        status, body, _ = await gw.post("/v1/recommend", request)
        assert status == 401 and body["error"]["code"] == "UNAUTHENTICATED"
        status, body, _ = await gw.post("/v1/recommend", request, {"Authorization": "Bearer " + "x" * 40})
        assert status == 401 and body["error"]["message"] == "unknown token"
        status, body, _ = await gw.post("/v1/recommend", request, {"Authorization": f"Bearer {INGEST}"})
        assert status == 403 and body["error"]["code"] == "PERMISSION_DENIED"
        status, body, _ = await gw.post("/v1/recommend", request, {"Authorization": f"Bearer {STOREFRONT}"})
        assert status == 200 and body["strategy"] == "STRATEGY_PERSONALIZED"
        # An unauthenticated caller learns nothing about its bytes: 401 before the JSON is read.
        assert (await gw.post("/v1/recommend", "{not json"))[0] == 401
        assert (await gw.get("/v1/catalog"))[0] == 401
        assert (await gw.get("/v1/catalog", {"Authorization": f"Bearer {STOREFRONT}"}))[0] == 200

        # The rate limit is the client's, whichever transport spends it.
        limited = {"Authorization": f"Bearer {LIMITED}"}
        assert (await gw.post("/v1/recommend", request, limited))[0] == 200
        await gw.stub.Recommend(gateway_pb2.RecommendRequest(user_id="buyer", k=2),
                                metadata=(("authorization", f"Bearer {LIMITED}"),))
        status, body, headers = await gw.post("/v1/recommend", request, limited)
        assert status == 429 and body["error"]["code"] == "RESOURCE_EXHAUSTED"
        assert int(headers["Retry-After"]) >= 1 and int(headers["retry-after-ms"]) > 0

        # CORS: the configured storefront origin may call from a browser; others get no grant.
        async with gw.session.options(gw.url + "/v1/recommend", headers={
                "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type"}) as resp:
            assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == ORIGIN
            assert "authorization" in resp.headers["Access-Control-Allow-Headers"]
        async with gw.session.options(gw.url + "/v1/recommend", headers={
                "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}) as resp:
            assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers
        status, _, headers = await gw.post("/v1/recommend", request,
                                           {"Authorization": f"Bearer {STOREFRONT}", "Origin": ORIGIN})
        assert status == 200 and headers["Access-Control-Allow-Origin"] == ORIGIN


def documented_curl_commands() -> list[str]:
    """The commands of the ```sh blocks of docs/api.md's HTTP section that call curl."""
    text = (REPO / "docs" / "api.md").read_text()
    text = text[text.index("## HTTP/JSON API"):]
    text = text[:text.find("\n## ", 1) % (len(text) + 1)]
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        joined = block.replace("\\\n", " ")
        commands += [line.strip() for line in joined.splitlines() if line.strip().startswith("curl ")]
    return commands


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_the_documented_curl_examples_run(tmp_path, redis_client, redis_url, kafka_bootstrap):
    commands = documented_curl_commands()
    assert len(commands) >= 3, "docs/api.md lost its curl examples"
    # The examples' ids: items "1".."12" (as `shopstream up`'s synthetic catalog names them), user u1.
    numbered = [str(n) for n in range(1, len(ITEMS) + 1)]
    await RedisCatalogStore(redis_client).upsert([
        catalog_pb2.CatalogItem(item_id=n, category=item.category, in_stock=True)
        for n, item in zip(numbered, catalog_items())])
    await add_history(RedisUserStateStore(redis_client), "u1", ["1", "2"])
    publish_toy_bundle(tmp_path / "models", numbered, vectors())
    await asyncio.to_thread(ensure_topics, kafka_bootstrap, 1)
    async with ranker_server(tmp_path / "models", redis_url) as addr, \
            gateway(settings_for(addr, redis_url, kafka_bootstrap_servers=kafka_bootstrap)) as gw:
        await until_ready(gw)
        for command in commands:
            # The documented default address, replaced by the port this gateway was given.
            argv = [arg.replace("http://127.0.0.1:8080", gw.url) for arg in shlex.split(command)]
            out = await asyncio.to_thread(subprocess.run, [*argv, "--fail-with-body", "--max-time", "20"],
                                          capture_output=True, text=True, timeout=HANG_GUARD_S)
            assert out.returncode == 0, (command, out.stdout, out.stderr)
            answer = json.loads(out.stdout)
            assert "error" not in answer
            if "/v1/recommend" in command:
                assert answer["strategy"] == "STRATEGY_PERSONALIZED" and answer["items"], answer
            elif "/v1/similar-items" in command:
                assert answer["items"], answer
            elif "/v1/events" in command:
                assert answer["accepted"] >= 1


async def test_the_http_port_speaks_tls_with_the_grpc_ports_certificate(world, redis_url, tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    chain, key, ca_file = tmp_path / "gw.pem", tmp_path / "gw-key.pem", tmp_path / "ca.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key.write_bytes(cert.private_key_pem.bytes())
    ca_file.write_bytes(ca.cert_pem.bytes())
    settings = settings_for("127.0.0.1:1", redis_url, tls_cert_file=chain, tls_key_file=key)
    async with running(settings) as gw, aiohttp.ClientSession() as session:
        trusted = ssl.create_default_context(cafile=str(ca_file))
        async with session.get(f"https://127.0.0.1:{gw.http_port}/livez", ssl=trusted) as resp:
            assert resp.status == 200
        with pytest.raises(aiohttp.ClientError):  # plaintext to a TLS port
            async with session.get(f"http://127.0.0.1:{gw.http_port}/livez") as resp:
                await resp.read()
