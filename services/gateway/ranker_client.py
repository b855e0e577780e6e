"""The gateway's client of the ranker: Rank calls coalesced into RankBatch; Similar unary.

Concurrent Recommend calls each need one Rank. Sent one by one, every one costs a
gRPC call on both sides, which on a busy gateway is most of a request's CPU. Instead
they go through a MicroBatcher whose batch function is one RankBatch call: a lone
request goes out at once (nothing waits for batch-mates), and while
``max_in_flight`` calls are out, newer requests queue and leave together in the
next one. Each caller keeps its own deadline (it stops waiting when that passes; the
batch call carries the latest deadline of its members). A ranker without RankBatch
(an older version during a rolling upgrade) answers UNIMPLEMENTED once and gets unary
Rank calls from then on.

Failures come back as RankerFailed(reason) for the trending fallback, except
NOT_FOUND and INVALID_ARGUMENT: those are the caller's fault and become domain errors, and
FAILED_PRECONDITION (the request named a model version the ranker has not loaded), which
becomes FailedPrecondition: a variant's model must never silently turn into the fallback.
Requests go out as given, ``model_version`` included (each RankBatch member keeps its own).
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from dataclasses import dataclass
from typing import Sequence

import grpc
from shopstream.ranker.v1 import ranker_pb2, ranker_pb2_grpc

from services.common.batching import MicroBatcher
from services.common.errors import DomainError, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from services.common.grpc_server import REQUEST_ID_METADATA
from services.common.logs import request_id
from services.gateway import metrics as m

logger = logging.getLogger(__name__)

_CODES = {code.value[0]: code for code in grpc.StatusCode}


class RankerFailed(Exception):
    """The ranker gave no usable answer; ``reason`` is the fallback reason (metrics label)."""

    def __init__(self, reason: str, code: grpc.StatusCode) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


def _failure(code: grpc.StatusCode, details: str) -> Exception:
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(details or "not found")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(details or "invalid argument")
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(details or "failed precondition")
    reason = {grpc.StatusCode.UNAVAILABLE: m.RANKER_UNAVAILABLE,
              grpc.StatusCode.RESOURCE_EXHAUSTED: m.RANKER_UNAVAILABLE,
              grpc.StatusCode.DEADLINE_EXCEEDED: m.RANKER_DEADLINE}.get(code, m.RANKER_ERROR)
    return RankerFailed(reason, code)


@dataclass(frozen=True)
class _RankCall:
    request: ranker_pb2.RankRequest
    deadline: float  # time.monotonic()
    request_id: str | None


class RankerClient:
    def __init__(self, stub: ranker_pb2_grpc.RankerServiceStub, metrics: m.GatewayMetrics, *,
                 batching: bool = True, max_batch: int = 64, max_in_flight: int = 1,
                 max_queue: int = 1024) -> None:
        self._stub = stub
        self._metrics = metrics
        self._batching = batching
        self._batcher: MicroBatcher[_RankCall, ranker_pb2.RankResponse] = MicroBatcher(
            self._send, max_batch_size=max_batch, max_wait_s=0.0, max_queue=max_queue,
            max_in_flight=max_in_flight, isolate_failures=False, name="gateway ranker client",
            on_batch=lambda size, _wait: metrics.ranker_batch_requests.observe(size))

    async def rank(self, request: ranker_pb2.RankRequest, timeout: float) -> ranker_pb2.RankResponse:
        """The ranker's answer within ``timeout`` seconds, or RankerFailed / a domain error."""
        call = _RankCall(request, time.monotonic() + timeout, request_id.get())
        if not self._batching:
            return await self._observed("Rank", self._unary_rank(call), timeout)
        return await self._observed("Rank", self._batcher.submit(call), timeout)

    async def similar(self, request: ranker_pb2.SimilarRequest, timeout: float) -> ranker_pb2.SimilarResponse:
        return await self._observed("Similar", self._unary("Similar", request, timeout, request_id.get()), timeout)

    async def list_models(self, timeout: float) -> ranker_pb2.ListModelsResponse:
        """The model versions the ranker holds (live and candidates) and their memory. Behind a
        load balancer this is one replica's answer; replicas poll the same models directory."""
        return await self._observed("ListModels", self._unary("ListModels", ranker_pb2.ListModelsRequest(),
                                                              timeout, request_id.get()), timeout)

    async def close(self) -> None:
        await self._batcher.close()

    async def _observed(self, method: str, awaitable, timeout: float):
        """Await under the caller's deadline; map every failure; record latency by status code."""
        if timeout <= 0:
            awaitable.close()
            raise RankerFailed(m.CLIENT_DEADLINE, grpc.StatusCode.DEADLINE_EXCEEDED)
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            async with asyncio.timeout(timeout):
                return await awaitable
        except TimeoutError:
            code = grpc.StatusCode.DEADLINE_EXCEEDED
            raise RankerFailed(m.RANKER_DEADLINE, code) from None
        except RankerFailed as exc:
            code = exc.code
            raise
        except ResourceExhausted:  # this client's own queue is full
            code = grpc.StatusCode.RESOURCE_EXHAUSTED
            raise RankerFailed(m.RANKER_UNAVAILABLE, code) from None
        except DomainError as exc:
            code = exc.code
            raise
        finally:
            self._metrics.ranker_latency.labels(method, code.name).observe(time.perf_counter() - start)

    async def _unary(self, method: str, request, timeout: float, rid: str | None):
        metadata = ((REQUEST_ID_METADATA, rid),) if rid else None
        try:
            return await getattr(self._stub, method)(request, timeout=timeout, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            logger.warning("ranker %s failed: %s %s", method, exc.code().name, exc.details())
            raise _failure(exc.code(), exc.details() or "") from None

    async def _unary_rank(self, call: _RankCall) -> ranker_pb2.RankResponse:
        return await self._unary("Rank", call.request, call.deadline - time.monotonic(), call.request_id)

    async def _send(self, calls: Sequence[_RankCall]) -> list[ranker_pb2.RankResponse | Exception]:
        """The batch function: one RankBatch call for all of ``calls``."""
        if self._batching:
            timeout = max(c.deadline for c in calls) - time.monotonic()
            ids = ",".join(c.request_id for c in calls if c.request_id)
            try:
                reply = await self._stub.RankBatch(
                    ranker_pb2.RankBatchRequest(requests=[c.request for c in calls]), timeout=timeout,
                    metadata=((REQUEST_ID_METADATA, ids),) if ids else None)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                    logger.warning("ranker RankBatch of %d failed: %s %s", len(calls), exc.code().name,
                                   exc.details())
                    raise _failure(exc.code(), exc.details() or "") from None
                logger.warning("the ranker does not implement RankBatch; calling Rank per request from now on")
                self._batching = False
            else:
                if len(reply.results) != len(calls):
                    raise RankerFailed(m.RANKER_ERROR, grpc.StatusCode.INTERNAL)
                return [self._outcome(o) for o in reply.results]
        return await asyncio.gather(*(self._unary_rank(c) for c in calls), return_exceptions=True)

    @classmethod
    def for_settings(cls, settings, channel: grpc.aio.Channel, metrics: m.GatewayMetrics) -> "RankerClient":
        """The client main builds from GatewaySettings over a channel to the ranker."""
        return cls(ranker_pb2_grpc.RankerServiceStub(channel), metrics, batching=settings.ranker_batching,
                   max_batch=settings.ranker_batch_max, max_in_flight=settings.ranker_max_in_flight)

    @staticmethod
    def _outcome(outcome: ranker_pb2.RankOutcome) -> ranker_pb2.RankResponse | Exception:
        if outcome.HasField("response"):
            return outcome.response
        code = _CODES.get(outcome.error.code, grpc.StatusCode.UNKNOWN)
        return _failure(code, outcome.error.message)


# -- the channel to the ranker replicas ------------------------------------------------------
#
# Several ranker replicas sit behind one target: a DNS name that resolves to all of them
# (``dns:///ranker:50051``, a Kubernetes headless Service) or a list of addresses. gRPC's
# default policy (pick_first) would send every call down the first connection it makes;
# round_robin keeps a subchannel per address and spreads calls across the READY ones, and
# skips a replica whose connection broke. A call that was already on its way to a replica
# when it died fails UNAVAILABLE: the retry policy sends it once more (to another READY
# replica), inside the caller's own deadline, so the storefront does not see it.

RETRY_POLICY = {
    "maxAttempts": 2,
    "initialBackoff": "0.005s",
    "maxBackoff": "0.05s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{"name": [{"service": "shopstream.ranker.v1.RankerService"}], "retryPolicy": RETRY_POLICY}],
}
_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:", "xds:")


def ranker_target(addr: str) -> str:
    """The gRPC target for SHOPSTREAM_GATEWAY_RANKER_ADDR.

    ``host:port`` and anything with a scheme (``dns:///ranker:50051``,
    ``ipv4:10.0.0.1:50051,10.0.0.2:50051``) pass through; a bare comma-separated list of IP
    addresses becomes an ``ipv4:`` / ``ipv6:`` target. A list of host names has no gRPC
    target form: serve them under one DNS name instead (ValueError says so).
    """
    addr = addr.strip()
    if addr.startswith(_SCHEMES) or "," not in addr:
        return addr
    hosts = [a.strip() for a in addr.split(",") if a.strip()]
    if all(h.startswith("[") for h in hosts):
        return "ipv6:" + ",".join(hosts)
    for h in hosts:
        host, _, port = h.rpartition(":")
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"SHOPSTREAM_GATEWAY_RANKER_ADDR: {h!r} in an address list must be an IPv4 "
                             "address with a port ([v6]:port for IPv6); for host names use one DNS name that "
                             "resolves to every replica: dns:///ranker:50051") from None
        if not port.isdigit():
            raise ValueError(f"SHOPSTREAM_GATEWAY_RANKER_ADDR: {h!r} has no numeric port")
    return "ipv4:" + ",".join(hosts)


def channel_options(options=()) -> tuple:
    """``options`` plus the round_robin service config with its retry policy."""
    return (*tuple(options), ("grpc.service_config", json.dumps(SERVICE_CONFIG)), ("grpc.enable_retries", 1))
