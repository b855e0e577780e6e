"""gRPC plumbing shared by ranker and gateway: interceptors, health, reflection,
and a run loop that shuts down gracefully on SIGTERM/SIGINT.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Awaitable, Callable, Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.errors import DomainError
from services.common.gc_tuning import freeze_startup_heap
from services.common.logs import request_id
from services.common.rpc_metrics import RpcMetrics

logger = logging.getLogger(__name__)

REQUEST_ID_METADATA = "x-request-id"


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Per unary call: request id in context, domain errors mapped to status codes, metrics.

    The wrapped handler is built once per method and cached: nothing per call but the call itself.
    """

    def __init__(self, metrics: RpcMetrics) -> None:
        self._metrics = metrics
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._wrap(method.rsplit("/", 1)[-1], handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, method: str, inner):
        requests = self._metrics.requests
        latency = self._metrics.latency.labels(method)

        async def wrapper(request, context: grpc.aio.ServicerContext):
            rid = _metadata_value(context.invocation_metadata(), REQUEST_ID_METADATA) or os.urandom(8).hex()
            token = request_id.set(rid)
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return await inner(request, context)
            except DomainError as exc:
                code = exc.code
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
