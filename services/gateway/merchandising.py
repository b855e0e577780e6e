"""MerchandisingService: named filter expressions, created, listed and deleted by storefront
teams without a code change (docs/rules.md)."""
from __future__ import annotations

from shopstream.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from services.rules.registry import FilterRegistry, parsed


class MerchandisingServicer(gateway_pb2_grpc.MerchandisingServiceServicer):
    def __init__(self, registry: FilterRegistry) -> None:
        self._registry = registry

    async def CreateFilter(self, request: gateway_pb2.CreateFilterRequest, context) -> gateway_pb2.FilterExpression:
        expression = await self._registry.put(request.filter.name, request.filter.expression)
        return _message(request.filter.name, request.filter.expression, expression.parameters)

    async def ListFilters(self, request: gateway_pb2.ListFiltersRequest, context) -> gateway_pb2.ListFiltersResponse:
        return gateway_pb2.ListFiltersResponse(filters=[
            _message(name, text, parsed(text).parameters) for name, text in (await self._registry.all()).items()])

    async def DeleteFilter(self, request: gateway_pb2.DeleteFilterRequest, context) -> gateway_pb2.DeleteFilterResponse:
        return gateway_pb2.DeleteFilterResponse(deleted=await self._registry.delete(request.name))


def _message(name: str, text: str, parameters) -> gateway_pb2.FilterExpression:
    return gateway_pb2.FilterExpression(name=name, expression=text, parameters=sorted(parameters))
