"""The gateway and the ranker with their security on: TLS on the gateway's port, API tokens
and rate limits, mutual TLS from the gateway to the ranker, plaintext health-only ports.

Real servers (gateway and ranker through their own build/running, embedded Redis and
Kafka) and certificates made for the test by trustme."""
from __future__ import annotations

import asyncio
import contextlib
import json

import grpc
import pytest
import trustme
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from prometheus_client import REGISTRY
from shopstream.events.v1 import events_pb2
from shopstream.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from shopstream.ranker.v1 import ranker_pb2, ranker_pb2_grpc
from support.ranker_harness import ITEMS, add_history, catalog_items, vectors
from support.toy_bundle import publish_toy_bundle

from services.common.errors import RETRY_AFTER_METADATA
from services.common.stores.catalog import RedisCatalogStore
from services.common.stores.user_state import RedisUserStateStore
from services.contract.producer import ensure_topics
from services.stack.client import describe, fetch
from services.gateway.main import running as gateway_running
from services.gateway.settings import GatewaySettings
from services.ranker.main import build as ranker_build
from services.ranker.main import running as ranker_running
from services.ranker.settings import RankerSettings

pytestmark = pytest.mark.integration

HANG_GUARD_S = 30
STOREFRONT, INGEST, LIMITED = "s" * 40, "i" * 40, "l" * 40


class Pki:
    """A CA, and PEM files for the servers' and the gateway's client certificates."""

    def __init__(self, tmp_path, name: str = "ca") -> None:
        self.dir = tmp_path / name
        self.dir.mkdir()
        self.ca = trustme.CA()
        self.ca_file = self._write("ca.pem", self.ca.cert_pem.bytes())

    def _write(self, name: str, data: bytes):
        path = self.dir / name
        path.write_bytes(data)
        return path

    def issue(self, name: str, *identities: str):
        """(cert chain file, key file) for ``identities`` (hostnames or IPs)."""
        cert = self.ca.issue_cert(*identities)
        chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
        return self._write(f"{name}.pem", chain), self._write(f"{name}-key.pem", cert.private_key_pem.bytes())

    def read(self, *paths) -> list[bytes]:
        return [p.read_bytes() for p in paths]


def tokens_file(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"clients": [
        {"name": "storefront", "tokens": [STOREFRONT], "methods": ["Recommend", "SimilarItems"]},
        {"name": "ingest", "tokens": [INGEST], "methods": ["TrackEvents"],
         "limits": {"events": {"per_s": 0.001, "burst": 3}}},  # 3 events, then (practically) never again
        {"name": "limited", "tokens": [LIMITED], "methods": ["*"],
         "limits": {"requests": {"per_s": 0.001, "burst": 2}}},
    ]}))
    return path


@pytest.fixture
async def world(tmp_path, redis_client):
    await RedisCatalogStore(redis_client).upsert(catalog_items())
    await add_history(RedisUserStateStore(redis_client), "buyer", ["h1", "h2"])
    publish_toy_bundle(tmp_path / "models", ITEMS, vectors())
    return tmp_path / "models"


@contextlib.asynccontextmanager
async def ranker(models_dir, redis_url, pki: Pki):
    """A ranker with mutual TLS (only certificates ``pki`` signed get in), its model loaded."""
    cert, key = pki.issue("ranker", "127.0.0.1")
    settings = RankerSettings(addr="127.0.0.1:0", models_dir=models_dir, redis_url=redis_url, prefer_gpu=False,
                              tls_cert_file=cert, tls_key_file=key, tls_client_ca_file=pki.ca_file,
                              health_addr="127.0.0.1:0")
    deps = ranker_build(settings)
    async with ranker_running(settings, deps) as running:
        await deps.catalog.refresh()
        await deps.holder.poll_once()
        yield running


async def until_serving(channel) -> None:
    async for reply in health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(),
                                                                  timeout=HANG_GUARD_S):
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            return
    pytest.fail("the health stream ended before SERVING")


def bearer(token: str):
    return (("authorization", f"Bearer {token}"),)


async def code_of(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


async def test_gateway_tls_tokens_rate_limits_and_mtls_to_the_ranker(world, tmp_path, redis_url, kafka_bootstrap):
    internal, public = Pki(tmp_path, "internal"), Pki(tmp_path, "public")
    gw_cert, gw_key = public.issue("gateway", "127.0.0.1")
    client_cert, client_key = internal.issue("gateway-client", "gateway.shopstream.internal")
    await asyncio.to_thread(ensure_topics, kafka_bootstrap, 1)
    async with ranker(world, redis_url, internal) as rk:
        settings = GatewaySettings(
            addr="127.0.0.1:0", ranker_addr=f"127.0.0.1:{rk.port}", redis_url=redis_url,
            kafka_bootstrap_servers=kafka_bootstrap, readiness_interval_s=0.05, grace_s=0, redis_timeout_s=5,
            ranker_timeout_s=HANG_GUARD_S, tokens_file=tokens_file(tmp_path),
            tls_cert_file=gw_cert, tls_key_file=gw_key,
            ranker_tls_ca_file=internal.ca_file, ranker_tls_cert_file=client_cert, ranker_tls_key_file=client_key,
            health_addr="127.0.0.1:0")
        async with gateway_running(settings) as gw:
            target = f"127.0.0.1:{gw.port}"
            creds = grpc.ssl_channel_credentials(root_certificates=public.ca_file.read_bytes())
            async with grpc.aio.secure_channel(target, creds) as channel:
                await until_serving(channel)  # health needs no token
                stub = gateway_pb2_grpc.GatewayServiceStub(channel)
                request = gateway_pb2.RecommendRequest(user_id="buyer", k=2)

                # Over TLS with a token: personalised, so the gateway -> ranker call worked over mTLS.
                resp = await stub.Recommend(request, metadata=bearer(STOREFRONT), timeout=HANG_GUARD_S)
                assert resp.strategy == gateway_pb2.STRATEGY_PERSONALIZED and not resp.degraded
                assert [i.item_id for i in resp.items] == ["h4", "h3"]

                err = await code_of(stub.Recommend(request, timeout=HANG_GUARD_S))
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "authorization: Bearer" in err.details()
                err = await code_of(stub.Recommend(request, metadata=bearer("x" * 40), timeout=HANG_GUARD_S))
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED and err.details() == "unknown token"
                err = await code_of(stub.TrackEvents(gateway_pb2.TrackEventsRequest(), metadata=bearer(STOREFRONT),
                                                     timeout=HANG_GUARD_S))
                assert err.code() == grpc.StatusCode.PERMISSION_DENIED
                assert err.details() == "client 'storefront' may not call TrackEvents"
                # Unauthenticated garbage is refused as unauthenticated, before its bytes are read.
                raw = channel.unary_unary("/shopstream.gateway.v1.GatewayService/Recommend")
                err = await code_of(raw(b"\x0a\xff", timeout=HANG_GUARD_S))
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED

                # Requests per second: a burst of 2, then RESOURCE_EXHAUSTED with the wait.
                def limited_count() -> float:
                    return REGISTRY.get_sample_value("shopstream_gateway_rate_limited_total",
                                                     {"client": "limited", "method": "Recommend"}) or 0.0

                before = limited_count()
                for _ in range(2):
                    await stub.Recommend(request, metadata=bearer(LIMITED), timeout=HANG_GUARD_S)
                call = stub.Recommend(request, metadata=bearer(LIMITED), timeout=HANG_GUARD_S)
                err = await code_of(call)
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                retry_ms = dict(await call.trailing_metadata())[RETRY_AFTER_METADATA]
                assert int(retry_ms) > 0 and f"retry after {retry_ms} ms" in err.details()
                assert limited_count() == before + 1

                # Events per second: each event costs one; the 4th event is over the limit.
                events = [events_pb2.Event(event_id=f"sec-{n}", user_id="buyer", item_id="h1",
                                           type=events_pb2.EVENT_TYPE_VIEW,
                                           occurred_at=Timestamp(seconds=1_700_000_000 + n)) for n in range(4)]
                track = stub.TrackEvents
                ok = await track(gateway_pb2.TrackEventsRequest(events=events[:3]), metadata=bearer(INGEST),
                                 timeout=HANG_GUARD_S)
                assert ok.accepted == 3
                err = await code_of(track(gateway_pb2.TrackEventsRequest(events=events[3:]),
                                          metadata=bearer(INGEST), timeout=HANG_GUARD_S))
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

            # `shopstream recommend` with --token and --ca (a blocking client: in a thread).
            described = await asyncio.to_thread(
                lambda: describe(fetch(target, "buyer", 2, timeout=HANG_GUARD_S, token=STOREFRONT, ca_file=public.ca_file)))
            assert described.startswith("[personalized") and described.endswith("h4, h3")

            # Reflection needs no token either (a blocking client: in a thread, the server is on this loop).
            def reflected_services() -> list[str]:
                with grpc.secure_channel(target, creds) as sync_channel:
                    return ProtoReflectionDescriptorDatabase(sync_channel).get_services()

            assert "shopstream.gateway.v1.GatewayService" in await asyncio.to_thread(reflected_services)

            # Plaintext to a TLS port: no answer at all.
            async with grpc.aio.insecure_channel(target) as plain:
                err = await code_of(gateway_pb2_grpc.GatewayServiceStub(plain).Recommend(
                    gateway_pb2.RecommendRequest(user_id="buyer", k=2), metadata=bearer(STOREFRONT), timeout=5))
                assert err.code() == grpc.StatusCode.UNAVAILABLE

            # The probes' plaintext port tells the health, and nothing else.
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.health_port}") as probe:
                reply = await health_pb2_grpc.HealthStub(probe).Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
                err = await code_of(gateway_pb2_grpc.GatewayServiceStub(probe).Recommend(
                    gateway_pb2.RecommendRequest(user_id="buyer", k=2), metadata=bearer(STOREFRONT), timeout=5))
                assert err.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_the_ranker_refuses_callers_without_a_certificate_its_ca_signed(world, tmp_path, redis_url):
    internal, stranger = Pki(tmp_path, "internal"), Pki(tmp_path, "stranger")
    request = ranker_pb2.RankRequest(user_id="buyer", k=2)
    async with ranker(world, redis_url, internal) as rk:
        target = f"127.0.0.1:{rk.port}"
        ca = internal.ca_file.read_bytes()
        good_cert, good_key = internal.read(*internal.issue("gateway-client", "gateway"))
        bad_cert, bad_key = stranger.read(*stranger.issue("impostor", "gateway"))
        callers = {
            "mutual TLS": grpc.ssl_channel_credentials(ca, good_key, good_cert),
            "TLS, no client certificate": grpc.ssl_channel_credentials(ca),
            "a certificate another CA signed": grpc.ssl_channel_credentials(ca, bad_key, bad_cert),
        }
        for name, creds in callers.items():
            async with grpc.aio.secure_channel(target, creds) as channel:
                call = ranker_pb2_grpc.RankerServiceStub(channel).Rank(request, timeout=5)
                if name == "mutual TLS":
                    assert (await call).user_known, name
                else:
                    err = await code_of(call)
                    assert err.code() == grpc.StatusCode.UNAVAILABLE, name
        async with grpc.aio.insecure_channel(target) as plain:
            err = await code_of(ranker_pb2_grpc.RankerServiceStub(plain).Rank(request, timeout=5))
            assert err.code() == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.insecure_channel(f"127.0.0.1:{rk.health_port}") as probe:
            reply = await health_pb2_grpc.HealthStub(probe).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
