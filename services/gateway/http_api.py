"""The gateway's HTTP/JSON API and demo storefront, served beside gRPC (docs/api.md).

Every RPC route calls the very ``GatewayServicer`` instance the gRPC server uses, with an
``HttpContext`` (http_context.py) in place of gRPC's, so validation, fallbacks and limits
are the same code on both transports. Requests and responses use the proto3 JSON mapping
(``google.protobuf.json_format``); domain errors become the HTTP status Google's APIs use
for their gRPC code, with a body ``{"error": {"code": "INVALID_ARGUMENT", "message": ...}}``.
API tokens and rate limits go through the same guard as gRPC calls (guard.py).

Routes: POST /v1/recommend, /v1/similar-items, /v1/events; GET /v1/catalog,
/v1/demo-config, /healthz (readiness: the gRPC health status), /livez, /openapi.json,
and the demo page at / (static/).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2

from services.common.errors import RETRY_AFTER_METADATA, DeadlineExceeded, DomainError, InvalidArgument
from services.common.grpc_server import REQUEST_ID_METADATA
from services.common.logs import request_id
from services.gateway import openapi
from services.gateway.guard import SERVICE
from services.gateway.http_context import HttpContext
from services.gateway.metrics import GatewayMetrics
from services.gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
# As gRPC's default receive limit, so a request too large for one transport is for the other.
MAX_BODY_BYTES = 4 * 1024 * 1024
CATALOG_DEFAULT_LIMIT, CATALOG_MAX_LIMIT, CATALOG_MAX_IDS = 48, 1000, 100

# gRPC status -> HTTP status, as Google's APIs map them (google.rpc.Code's documentation).
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

CORS_ALLOW_HEADERS = "authorization, content-type, grpc-timeout, x-request-timeout, x-request-id"
CORS_EXPOSE_HEADERS = "x-request-id, retry-after, retry-after-ms"


def error_response(code: grpc.StatusCode, message: str, rid: str = "",
                   trailing: tuple[tuple[str, str], ...] = ()) -> web.Response:
    """The JSON error of ``code``; a rate limit's ``retry-after-ms`` becomes Retry-After too."""
    headers = {}
    for key, value in trailing:
        if key == RETRY_AFTER_METADATA:
            headers[RETRY_AFTER_METADATA] = value
            headers["Retry-After"] = str(max(1, math.ceil(int(value) / 1000)))
    body = {"error": {"code": code.name, "message": message, **({"request_id": rid} if rid else {})}}
    return web.json_response(body, status=HTTP_STATUS.get(code, 500), headers=headers)


def to_json(message: Message) -> dict[str, Any]:
    # Fields at their default are written too (``"degraded": false``, ``"accepted": 0``), so a
    # storefront need not know proto3's rule that defaults are left out.
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def parse_json(text: str, message_cls: type[Message]) -> Message:
    """The request message from its JSON (an empty body is the empty message); anything else
    than a JSON object of the message's fields is INVALID_ARGUMENT."""
    message = message_cls()
    try:
        doc = json.loads(text or "{}")
        if not isinstance(doc, dict):  # json_format would take a list as an empty message
            raise ValueError(f"expected a JSON object, got {type(doc).__name__}")
        json_format.ParseDict(doc, message)
    except (ValueError, RecursionError, json_format.ParseError) as exc:  # RecursionError: "[[[[…" nested deeper
        # than the parser's stack (json_format bounds the nesting it parses itself)
        raise InvalidArgument(f"the request is not a valid {message.DESCRIPTOR.full_name} JSON message: {exc}") \
            from None
    return message


@dataclass(frozen=True)
class RpcRoute:
    path: str
    method: str  # of GatewayService
    request_cls: type[Message]


def rpc_routes() -> list[RpcRoute]:
    from google.protobuf import message_factory

    routes = []
    for path, name in openapi.RPC_PATHS.items():
        method = SERVICE.methods_by_name[name]
        routes.append(RpcRoute(path, name, message_factory.GetMessageClass(method.input_type)))
    return routes


class HttpApi:
    """The handlers of the HTTP API over one servicer, guard and health servicer."""

    def __init__(self, settings: GatewaySettings, servicer, guard, catalog, health_servicer: health.aio.HealthServicer,
                 metrics: GatewayMetrics) -> None:
        self._s = settings
        self._servicer = servicer
        self._guard = guard
        self._catalog = catalog
        self._health = health_servicer
        self._metrics = metrics
        self._catalog_order: tuple[int, list] = (-1, [])  # (catalog version, items sorted)

    # -- the calls -------------------------------------------------------------------

    async def _call(self, request: web.Request, route: str, body: Callable[[HttpContext, Any], Awaitable[web.Response]],
                    guard_method: str | None) -> web.Response:
        """Request id, deadline, guard (authentication before the body is read, the rate limit
        after it is parsed: ``body`` calls ``admit(request)``), errors as JSON, metrics: what
        ServerInterceptor does for a gRPC call. ``guard_method``: the GatewayService method
        whose permission and limit the route takes (None: open)."""
        rid = request.headers.get(REQUEST_ID_METADATA) or os.urandom(8).hex()
        token = request_id.set(rid)
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            context = HttpContext.from_headers(request.headers, request.remote or "")
            guard = (self._guard.for_method(f"/{SERVICE.full_name}/{guard_method}")
                     if self._guard is not None and guard_method else None)
            principal = guard.authenticate(context.invocation_metadata()) if guard is not None else None

            def admit(message) -> None:
                if guard is not None:
                    guard.admit(principal, message)

            deadline = asyncio.timeout(context.time_remaining())
            try:
                async with deadline:
                    response = await body(context, admit)
            except TimeoutError:
                if not deadline.expired():
                    raise
                raise DeadlineExceeded("the client's deadline passed before the answer was ready") from None
        except DomainError as exc:
            code = exc.code
            response = error_response(exc.code, exc.message, rid, exc.trailing_metadata)
        except asyncio.CancelledError:  # the client went away
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            logger.exception("unhandled error in %s", route)
            response = error_response(grpc.StatusCode.INTERNAL, "internal error", rid)
        finally:
            self._metrics.http_requests.labels(route, code.name).inc()
            self._metrics.http_latency.labels(route).observe(time.perf_counter() - start)
            request_id.reset(token)
        response.headers[REQUEST_ID_METADATA] = rid
        return response

    def rpc_handler(self, route: RpcRoute):
        method = getattr(self._servicer, route.method)

        async def handle(request: web.Request) -> web.Response:
            async def body(context: HttpContext, admit) -> web.Response:
                message = parse_json(await _read_text(request), route.request_cls)
                admit(message)
                return web.json_response(to_json(await method(message, context)))

            return await self._call(request, route.path, body, route.method)

        return handle

    async def catalog(self, request: web.Request) -> web.Response:
        async def body(_context, admit) -> web.Response:
            admit(None)
            query = request.query
            snapshot = self._catalog.snapshot
            if "ids" in query:
                ids = [i for i in query["ids"].split(",") if i]
                if len(ids) > CATALOG_MAX_IDS:
                    raise InvalidArgument(f"ids names {len(ids)} items, at most {CATALOG_MAX_IDS} allowed")
                items = [snapshot.items[i] for i in ids if i in snapshot.items]
            else:
                items = self._sorted(snapshot)
            category = query.get("category", "")
            if category:
                items = [it for it in items if it.category == category]
            limit = _int_param(query, "limit", CATALOG_DEFAULT_LIMIT, 1, CATALOG_MAX_LIMIT)
            offset = _int_param(query, "offset", 0, 0, 2**31 - 1)
            counts: dict[str, int] = {}
            for item in snapshot.items.values():
                counts[item.category] = counts.get(item.category, 0) + 1
            return web.json_response({
                "items": [to_json(it) for it in items[offset:offset + limit]],
                "total": len(items),
                "categories": [{"name": name, "items": n} for name, n in sorted(counts.items())],
            })

        # Reading the catalog takes a token that may call Recommend (and spends a request of its limit).
        return await self._call(request, "/v1/catalog", body, "Recommend")

    def _sorted(self, snapshot) -> list:
        version, items = self._catalog_order
        if version != snapshot.version or len(items) != len(snapshot.items):
            items = sorted(snapshot.items.values(), key=lambda it: (it.category, it.item_id))
            self._catalog_order = (snapshot.version, items)
        return items

    async def demo_config(self, _request: web.Request) -> web.Response:
        return web.json_response({"prometheus_url": self._s.prometheus_url,
                                  "auth_required": self._guard is not None})

    async def healthz(self, _request: web.Request) -> web.Response:
        """Readiness, read from the gRPC health servicer itself: the two cannot disagree."""
        reply = await self._health.Check(health_pb2.HealthCheckRequest(service=SERVICE.full_name), None)
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return web.json_response({"status": status}, status=200 if status == "SERVING" else 503)

    async def livez(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "SERVING"})

    async def openapi_json(self, _request: web.Request) -> web.Response:
        return web.json_response(openapi.document(), dumps=lambda d: json.dumps(d, indent=1))

    async def index(self, _request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def _read_text(request: web.Request) -> str:
    try:
        return await request.text()
    except web.HTTPRequestEntityTooLarge:
        raise InvalidArgument(f"the request body is larger than {MAX_BODY_BYTES} bytes") from None
    except UnicodeDecodeError:
        raise InvalidArgument("the request body is not UTF-8 JSON") from None


def _int_param(query, name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidArgument(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise InvalidArgument(f"{name} must be between {low} and {high}, got {value}")
    return value


def cors_middleware(origins: frozenset[str]):
    """Access-Control-* for the allowed origins (``*``: any); preflights answered here."""

    @web.middleware
    async def cors(request: web.Request, handler):
        origin = request.headers.get("Origin")
        allowed = origin is not None and ("*" in origins or origin in origins)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if not allowed:
                return error_response(grpc.StatusCode.PERMISSION_DENIED,
                                      f"origin {origin!r} is not allowed (SHOPSTREAM_GATEWAY_HTTP_CORS_ORIGINS)")
            response = web.Response(status=204)
            response.headers.update({"Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                                     "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
                                     "Access-Control-Max-Age": "600"})
        else:
            response = await handler(request)
        if allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
            response.headers["Vary"] = "Origin"
        return response

    return cors


def create_app(settings: GatewaySettings, servicer, guard, catalog, health_servicer: health.aio.HealthServicer,
               metrics: GatewayMetrics) -> web.Application:
    """The aiohttp application of the HTTP API over the gRPC server's own servicer."""
    origins = frozenset(o.strip() for o in settings.http_cors_origins.split(",") if o.strip())
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[cors_middleware(origins)] if origins else [])
    api = HttpApi(settings, servicer, guard, catalog, health_servicer, metrics)
    for route in rpc_routes():
        app.router.add_post(route.path, api.rpc_handler(route))
    app.router.add_get("/v1/catalog", api.catalog)
    app.router.add_get("/v1/demo-config", api.demo_config)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/livez", api.livez)
    app.router.add_get("/openapi.json", api.openapi_json)
    if settings.http_demo:
        app.router.add_get("/", api.index)
        app.router.add_static("/static/", STATIC_DIR)
    return app


@contextlib.asynccontextmanager
async def serving(settings: GatewaySettings, app: web.Application):
    """``app`` listening on ``settings.http_addr`` until exit; yields the port bound (the
    address may say 0). In-flight requests get ``grace_s`` to finish on exit."""
    host, _, port = settings.http_addr.rpartition(":")
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.grace_s)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host.strip("[]"), int(port), reuse_address=True, ssl_context=_ssl_context(settings))
        await site.start()
        bound = runner.addresses[0][1]
        yield bound
    finally:
        await runner.cleanup()


def _ssl_context(settings: GatewaySettings) -> ssl.SSLContext | None:
    """TLS with the gRPC port's certificate (and client CA), so neither port is the weaker one."""
    tls = settings.server_tls()
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    if settings.tls_client_ca_file is not None:
        context.load_verify_locations(settings.tls_client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
