"""gRPC plumbing shared by ranker and gateway: interceptors, health, reflection,
and a run loop that shuts down gracefully on SIGTERM/SIGINT.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generic, Iterable, Protocol, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.errors import DomainError, InvalidArgument
from services.common.gc_tuning import freeze_startup_heap
from services.common.logs import request_id
from services.common.rpc_metrics import RpcMetrics

logger = logging.getLogger(__name__)

REQUEST_ID_METADATA = "x-request-id"


class MethodGuard(Protocol):
    """Who may call one method, and how often (services/common/auth.py is the implementation)."""

    def authenticate(self, metadata) -> Any:
        """The caller (a principal) from the call's metadata; raises a DomainError to refuse
        (UNAUTHENTICATED, PERMISSION_DENIED). Runs before the request is looked at."""

    def admit(self, principal: Any, request) -> None:
        """Raises a DomainError (RESOURCE_EXHAUSTED) when the caller's rate limit is spent."""


class CallGuard(Protocol):
    def for_method(self, method: str) -> MethodGuard | None:
        """The guard of ``method`` (a full path, ``/package.Service/Method``), None if it is open."""


class _Undecodable:
    """What the request deserializer returns for bytes that are not the request message, so
    that the handler can answer INVALID_ARGUMENT (a deserializer that raises gives UNKNOWN)."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _tolerant(deserializer, method: str):
    if deserializer is None:
        return None
    message = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    what = message.full_name if message is not None else f"{method} request"

    def deserialize(raw: bytes):
        try:
            return deserializer(raw)
        except Exception as exc:  # protobuf's DecodeError, or whatever a custom deserializer raises
            return _Undecodable(f"the request is not a valid {what} message ({exc or type(exc).__name__})")

    return deserialize


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Per unary call: request id in context, the call's guard (authentication, rate limits),
    undecodable requests as INVALID_ARGUMENT, domain errors mapped to status codes (with their
    trailing metadata), metrics.

    The wrapped handler is built once per method and cached: nothing per call but the call itself.
    """

    def __init__(self, metrics: RpcMetrics, guard: CallGuard | None = None) -> None:
        self._metrics = metrics
        self._guard = guard
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        guard = self._guard.for_method(method) if self._guard is not None else None
        if handler.unary_unary is None:
            if guard is not None:  # fail closed: the guard only knows unary calls
                raise RuntimeError(f"{method} is a streaming method, which the call guard cannot check")
            return handler
        name = method.rsplit("/", 1)[-1]
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._wrap(name, handler.unary_unary, guard),
            request_deserializer=_tolerant(handler.request_deserializer, name),
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, method: str, inner, guard: MethodGuard | None):
        requests = self._metrics.requests
        latency = self._metrics.latency.labels(method)

        async def wrapper(request, context: grpc.aio.ServicerContext):
            metadata = context.invocation_metadata()
            rid = _metadata_value(metadata, REQUEST_ID_METADATA) or os.urandom(8).hex()
            token = request_id.set(rid)
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                # Who calls comes first: an unauthenticated caller learns nothing about its bytes.
                principal = guard.authenticate(metadata) if guard is not None else None
                if type(request) is _Undecodable:
                    raise InvalidArgument(request.error)
                if guard is not None:
                    guard.admit(principal, request)
                return await inner(request, context)
            except DomainError as exc:
                code = exc.code
                if exc.trailing_metadata:
                    context.set_trailing_metadata(exc.trailing_metadata)
                await context.abort(exc.code, exc.message)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError) or type(exc).__name__ == "AbortError":
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                code = grpc.StatusCode.INTERNAL
                logger.exception("unhandled error in %s", method)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            finally:
                requests.labels(method, code.name).inc()
                latency.observe(time.perf_counter() - start)
                request_id.reset(token)

        return wrapper


def _metadata_value(metadata, key: str) -> str | None:
    for entry in metadata or ():
        if entry[0] == key:
            return entry[1]
    return None


# A health "service" that is SERVING as long as the process answers at all: Check is served
# on the event loop, so it tells a live server from a wedged one without turning a
# server that is merely not ready (no model yet, Redis down) into a restart.
LIVENESS = "liveness"


async def add_health_and_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> health.aio.HealthServicer:
    """Registers grpc.health.v1 (every service NOT_SERVING until set_health, ``liveness``
    SERVING) and reflection."""
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    names = list(service_names)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    await servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
    return servicer


async def health_only_server(addr: str, servicer: health.aio.HealthServicer) -> tuple[grpc.aio.Server, int]:
    """A plaintext server with nothing but ``servicer`` (not started), for probes that cannot
    speak TLS (the kubelet's gRPC probes) when the service's own port requires it. It shares
    the service's health servicer, so both ports tell the same status; it answers nothing else."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port(addr)
    if port == 0:
        raise RuntimeError(f"could not bind {addr}")
    return server, port


@dataclass(frozen=True)
class BoundServer:
    """A bound, not yet started server, the port it bound, and its health servicer; with a
    health address, a plaintext health-only server sharing that servicer, and its port."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None

    @classmethod
    async def with_health(cls, server: grpc.aio.Server, port: int, servicer: health.aio.HealthServicer,
                          health_addr: str | None) -> BoundServer:
        if not health_addr:
            return cls(server, port, servicer)
        health_server, health_port = await health_only_server(health_addr, servicer)
        return cls(server, port, servicer, health_server, health_port)

    async def start(self, stack: contextlib.AsyncExitStack, service_names: Iterable[str], grace_s: float) -> None:
        """Start serving; ``stack`` undoes it on exit: health NOT_SERVING first, then
        ``stop(grace_s)``, then the health-only server (so probes see the grace out)."""
        if self.health_server is not None:
            await self.health_server.start()
            stack.push_async_callback(self.health_server.stop, 0)
        await self.server.start()
        stack.push_async_callback(self.server.stop, grace_s)
        stack.push_async_callback(set_health, self.health, list(service_names), False)


D = TypeVar("D")


@dataclass(frozen=True)
class RunningServer(Generic[D]):
    """A service started by its ``running``: the port actually bound (the address may say 0),
    its dependencies, the server and its health servicer."""

    port: int
    deps: D
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    health_port: int | None = None  # the plaintext health-only port, with a health address
    http_port: int | None = None  # the HTTP/JSON API's port (the gateway's, when it serves one)

    @classmethod
    def of(cls, bound: BoundServer, deps: D, http_port: int | None = None) -> RunningServer[D]:
        return cls(bound.port, deps, bound.server, bound.health, bound.health_port, http_port)


async def set_health(servicer: health.aio.HealthServicer, service_names: Iterable[str], serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ["", *service_names]:
        await servicer.set(name, status)


async def cancel_tasks(tasks: list[asyncio.Task], timeout_s: float = 5.0) -> None:
    """Cancel background tasks in reverse order of start and wait for each to finish, at
    most ``timeout_s`` each: a task that ignores its cancel is logged, and shutdown goes on."""
    for task in reversed(tasks):
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            logger.error("background task %s did not stop within %.1f s of its cancel", task.get_name(), timeout_s)
        elif not task.cancelled() and task.exception() is not None:
            logger.error("background task %s had failed", task.get_name(), exc_info=task.exception())


async def run_until_signalled(
    start: Callable[[], Awaitable[None]],
    stop: Callable[[], Awaitable[None]],
) -> None:
    """Start, wait for SIGTERM/SIGINT, then stop. Used by every service's main."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await start()
    freeze_startup_heap()
    await stopping.wait()
    logger.info("shutdown signal received")
    await stop()
