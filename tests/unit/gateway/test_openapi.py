"""The HTTP API's OpenAPI document (services/gateway/openapi.py) against the protos it is made from."""
from __future__ import annotations

import jsonschema
import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.timestamp_pb2 import Timestamp
from shopstream.catalog.v1 import catalog_pb2
from shopstream.events.v1 import events_pb2
from shopstream.gateway.v1 import gateway_pb2

from services.gateway import openapi
from services.gateway.http_api import rpc_routes

def messages_under(message: Descriptor, seen: dict[str, Descriptor] | None = None) -> dict[str, Descriptor]:
    """``message`` and every message its fields reach, by full name (well-known types, which
    have a JSON form of their own, and map entries, which are JSON objects, not walked)."""
    seen = {} if seen is None else seen
    if message.full_name in seen or message.full_name in openapi.WELL_KNOWN:
        return seen
    seen[message.full_name] = message
    for field in message.fields:
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        target = field.message_type
        if target.GetOptions().map_entry:
            target = target.fields_by_name["value"].message_type  # None for a scalar value
        if target is not None:
            messages_under(target, seen)
    return seen


def test_every_proto_field_of_every_request_and_response_is_in_the_document():
    doc = openapi.document()
    schemas = doc["components"]["schemas"]
    reached: dict[str, Descriptor] = {}
    for path, name in openapi.RPC_PATHS.items():
        method = openapi.SERVICE.methods_by_name[name]
        operation = doc["paths"][path]["post"]
        assert operation["operationId"] == name
        assert operation["requestBody"]["content"]["application/json"]["schema"] == \
            {"$ref": f"#/components/schemas/{method.input_type.full_name}"}
        assert operation["responses"]["200"]["content"]["application/json"]["schema"] == \
            {"$ref": f"#/components/schemas/{method.output_type.full_name}"}
        assert {"400", "401", "404", "429", "503", "504"} <= set(operation["responses"])
        messages_under(method.input_type, reached)
        messages_under(method.output_type, reached)
    messages_under(catalog_pb2.CatalogItem.DESCRIPTOR, reached)
    # Every method of the service has its route, and the HTTP server serves exactly those.
    assert set(openapi.RPC_PATHS.values()) == {m.name for m in openapi.SERVICE.methods}
    assert {r.path for r in rpc_routes()} == set(openapi.RPC_PATHS)
    assert {"shopstream.events.v1.Event", "shopstream.gateway.v1.RecommendedItem"} <= set(reached)
    for full_name, message in reached.items():
        assert set(schemas[full_name]["properties"]) == {f.json_name for f in message.fields}, full_name


def test_enums_are_their_value_names():
    schemas = openapi.document()["components"]["schemas"]
    assert schemas["shopstream.events.v1.EventType"]["enum"] == list(events_pb2.EventType.keys())
    assert schemas["shopstream.gateway.v1.Strategy"]["enum"] == list(gateway_pb2.Strategy.keys())


def validator(schema_name: str) -> jsonschema.Draft202012Validator:
    doc = openapi.document()
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": doc["components"]}
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def populated_messages():
    ts = Timestamp(seconds=1_700_000_000, nanos=5_000_000)
    event = events_pb2.Event(event_id="e1", user_id="u1", item_id="i1", type=events_pb2.EVENT_TYPE_PURCHASE,
                             occurred_at=ts, session_id="s", context=events_pb2.EventContext(
                                 page="home", device=events_pb2.DEVICE_MOBILE),
                             recommendation_id="r1", position=0, value=9.5)
    filters = gateway_pb2.RecommendFilters(include_categories=["a"], exclude_item_ids=["x"], in_stock_only=False)
    item = gateway_pb2.RecommendedItem(item_id="i2", score=0.5)
    return [
        gateway_pb2.RecommendRequest(user_id="u1", k=5, filters=filters),
        gateway_pb2.RecommendResponse(items=[item], strategy=gateway_pb2.STRATEGY_PERSONALIZED, model_version="v1",
                                      recommendation_id="r1", variant="v1"),
        gateway_pb2.SimilarItemsRequest(item_id="i1", k=3, filters=filters),
        gateway_pb2.SimilarItemsResponse(items=[item], degraded=True, degraded_reason="ranker unavailable"),
        gateway_pb2.TrackEventsRequest(events=[event]),
        gateway_pb2.TrackEventsResponse(accepted=1),
        catalog_pb2.CatalogItem(item_id="i1", title="t", category="c", price=1.5, in_stock=True, attributes=["a"]),
    ]


@pytest.mark.parametrize("message", populated_messages(), ids=lambda m: m.DESCRIPTOR.name)
def test_messages_as_the_api_writes_them_match_their_schemas(message):
    check = validator(message.DESCRIPTOR.full_name)
    check.validate(json_format.MessageToDict(message))
    check.validate(json_format.MessageToDict(message, always_print_fields_with_no_presence=True))
    with pytest.raises(jsonschema.ValidationError):
        check.validate({**json_format.MessageToDict(message), "noSuchField": 1})
