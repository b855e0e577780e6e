"""The HTTP API's OpenAPI 3.1 document, made from the proto descriptors.

Every schema is the proto3 JSON mapping of a message (field names in lowerCamelCase, as
``json_format`` writes them; parsers accept the proto names too; enums as value names;
64-bit integers as strings; ``google.protobuf.Timestamp`` as an RFC 3339 string), so the
document cannot drift from the messages the API parses and writes. ``python -m
services.gateway.openapi`` prints it; the gateway serves it at ``/openapi.json``.
"""
from __future__ import annotations

import json
import sys
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from shopstream.catalog.v1 import catalog_pb2
from shopstream.gateway.v1 import gateway_pb2

SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"]

# The RPCs over HTTP: path -> method of GatewayService (http_api.py serves exactly these).
RPC_PATHS = {
    "/v1/recommend": "Recommend",
    "/v1/similar-items": "SimilarItems",
    "/v1/events": "TrackEvents",
}

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "uint32", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "uint32", "minimum": 0},
    # The proto3 JSON mapping writes 64-bit integers as strings (and reads either).
    FieldDescriptor.TYPE_INT64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_SINT64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": ["string", "integer"], "format": "uint64"},
    FieldDescriptor.TYPE_FIXED64: {"type": ["string", "integer"], "format": "uint64"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}

# Well-known types with a JSON form of their own (the proto3 JSON mapping's table).
_WRAPPERS = {"Double": "number", "Float": "number", "Int32": "integer", "UInt32": "integer", "Bool": "boolean",
             "String": "string", "Int64": ["string", "integer"], "UInt64": ["string", "integer"], "Bytes": "string"}
WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time",
                                  "description": "RFC 3339, e.g. 2026-12-03T17:00:00Z"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?\d+(\.\d+)?s$", "description": "e.g. 1.5s"},
    "google.protobuf.Struct": {"type": "object", "description": "any JSON object"},
    "google.protobuf.Value": {"description": "any JSON value"},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.FieldMask": {"type": "string", "description": "comma-separated lowerCamelCase paths"},
    "google.protobuf.Any": {"type": "object", "required": ["@type"]},
    **{f"google.protobuf.{name}Value": {"type": kind} for name, kind in _WRAPPERS.items()},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


class _Schemas:
    """components.schemas, filled by walking messages (each named by its full proto name)."""

    def __init__(self) -> None:
        self.schemas: dict[str, dict[str, Any]] = {}

    def enum(self, enum: EnumDescriptor) -> dict[str, str]:
        if enum.full_name not in self.schemas:
            self.schemas[enum.full_name] = {"type": "string", "enum": [v.name for v in enum.values],
                                            "description": f"proto enum {enum.full_name} (numbers are accepted too)"}
        return _ref(enum.full_name)

    def message(self, message: Descriptor) -> dict[str, Any]:
        if message.full_name in WELL_KNOWN:
            return dict(WELL_KNOWN[message.full_name])
        if message.full_name not in self.schemas:
            self.schemas[message.full_name] = {}  # placed first, so recursive messages terminate
            properties = {field.json_name: self.field(field) for field in message.fields}
            self.schemas[message.full_name] = {
                "type": "object",
                "description": f"proto message {message.full_name}",
                "properties": properties,
                "additionalProperties": False,
            }
        return _ref(message.full_name)

    def _single(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            return self.message(field.message_type)
        if field.type == FieldDescriptor.TYPE_ENUM:
            return self.enum(field.enum_type)
        return dict(_SCALARS[field.type])

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        message = field.message_type
        if message is not None and message.GetOptions().map_entry:
            return {"type": "object", "additionalProperties": self._single(message.fields_by_name["value"])}
        if field.is_repeated:
            return {"type": "array", "items": self._single(field)}
        schema = self._single(field)
        if field.has_presence and field.type != FieldDescriptor.TYPE_MESSAGE:
            schema = {**schema, "description": f"optional (proto name {field.name}); absent means unset"}
        return schema


ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string", "description": "the gRPC status name, e.g. INVALID_ARGUMENT"},
        "message": {"type": "string"},
        "request_id": {"type": "string"},
    }}},
}

# gRPC status -> HTTP status, as Google's APIs map them (google.rpc.Code); http_api.py uses it.
ERROR_RESPONSES = {
    "400": "INVALID_ARGUMENT (a bad request, or malformed JSON), FAILED_PRECONDITION, OUT_OF_RANGE",
    "401": "UNAUTHENTICATED (no or unknown API token: send Authorization: Bearer <token>)",
    "403": "PERMISSION_DENIED (the token may not call this)",
    "404": "NOT_FOUND (e.g. an item the catalog and the model do not know)",
    "429": "RESOURCE_EXHAUSTED (rate limit spent; Retry-After says when to retry)",
    "503": "UNAVAILABLE (a store or the event log is down; retry)",
    "504": "DEADLINE_EXCEEDED (the grpc-timeout / X-Request-Timeout ran out)",
}

_TIMEOUT_PARAMETERS = [
    {"name": "grpc-timeout", "in": "header", "required": False, "schema": {"type": "string", "example": "150m"},
     "description": "deadline in gRPC's format (digits and a unit: H, M, S, m, u, n)"},
    {"name": "X-Request-Timeout", "in": "header", "required": False, "schema": {"type": "number", "example": 0.15},
     "description": "deadline in seconds (used when grpc-timeout is absent)"},
    {"name": "X-Request-Id", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "carried into the gateway's logs and echoed back; one is made up when absent"},
]


def _errors() -> dict[str, Any]:
    return {status: {"description": about, "content": {"application/json": {"schema": _ref("Error")}}}
            for status, about in ERROR_RESPONSES.items()}


def document() -> dict[str, Any]:
    """The OpenAPI document of the gateway's HTTP API."""
    schemas = _Schemas()
    paths: dict[str, Any] = {}
    for path, name in RPC_PATHS.items():
        method = SERVICE.methods_by_name[name]
        paths[path] = {"post": {
            "operationId": name,
            "summary": f"{SERVICE.full_name}/{name} over HTTP/JSON",
            "parameters": _TIMEOUT_PARAMETERS,
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": schemas.message(method.input_type)}}},
            "responses": {"200": {"description": "OK", "content": {"application/json": {
                "schema": schemas.message(method.output_type)}}}, **_errors()},
        }}
    catalog_item = schemas.message(catalog_pb2.CatalogItem.DESCRIPTOR)
    paths["/v1/catalog"] = {"get": {
        "operationId": "ListCatalog",
        "summary": "Catalog items as the gateway's catalog cache holds them (sorted by category, then id)",
        "parameters": [
            {"name": "category", "in": "query", "required": False, "schema": {"type": "string"}},
            {"name": "ids", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "comma-separated item ids (at most 100); only those items, in that order"},
            {"name": "limit", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 48}},
            {"name": "offset", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
        ],
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {
            "type": "object",
            "properties": {
                "items": {"type": "array", "items": catalog_item},
                "total": {"type": "integer", "description": "items matching, before limit/offset"},
                "categories": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "items": {"type": "integer"}}}},
            }}}}}, **_errors()},
    }}
    paths["/v1/demo-config"] = {"get": {
        "operationId": "DemoConfig",
        "summary": "What the demo page needs to know (the ops view's (Prometheus) URL, whether a token is required)",
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {
            "type": "object",
            "properties": {"prometheus_url": {"type": "string"}, "auth_required": {"type": "boolean"}}}}}}},
    }}
    paths["/healthz"] = {"get": {
        "operationId": "Ready",
        "summary": "Readiness: the same status as grpc.health.v1 for GatewayService",
        "responses": {
            "200": {"description": "SERVING", "content": {"application/json": {"schema": _ref("Health")}}},
            "503": {"description": "NOT_SERVING", "content": {"application/json": {"schema": _ref("Health")}}},
        },
    }}
    paths["/livez"] = {"get": {"operationId": "Live", "summary": "Liveness: 200 while the server answers",
                               "responses": {"200": {"description": "alive"}}}}
    components = {
        **schemas.schemas,
        "Error": ERROR_SCHEMA,
        "Health": {"type": "object", "properties": {"status": {"type": "string", "enum": ["SERVING", "NOT_SERVING"]}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "shopstream gateway HTTP/JSON API", "version": "v1",
                 "description": "The GatewayService RPCs over HTTP/JSON (proto3 JSON mapping), beside gRPC on its "
                                "own port. Authorization: Bearer <token> when the gateway requires tokens. See "
                                "docs/api.md."},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
    }


def main() -> int:
    json.dump(document(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
