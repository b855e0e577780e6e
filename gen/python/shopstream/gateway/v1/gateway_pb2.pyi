from shopstream.events.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Strategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRATEGY_UNSPECIFIED: _ClassVar[Strategy]
    STRATEGY_PERSONALIZED: _ClassVar[Strategy]
    STRATEGY_TRENDING: _ClassVar[Strategy]
STRATEGY_UNSPECIFIED: Strategy
STRATEGY_PERSONALIZED: Strategy
STRATEGY_TRENDING: Strategy

class RecommendFilters(_message.Message):
    __slots__ = ("include_categories", "exclude_categories", "exclude_item_ids", "in_stock_only", "exclude_purchased", "exclude_seen")
    INCLUDE_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    IN_STOCK_ONLY_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_PURCHASED_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_SEEN_FIELD_NUMBER: _ClassVar[int]
    include_categories: _containers.RepeatedScalarFieldContainer[str]
    exclude_categories: _containers.RepeatedScalarFieldContainer[str]
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    in_stock_only: bool
    exclude_purchased: bool
    exclude_seen: bool
    def __init__(self, include_categories: _Optional[_Iterable[str]] = ..., exclude_categories: _Optional[_Iterable[str]] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., in_stock_only: _Optional[bool] = ..., exclude_purchased: _Optional[bool] = ..., exclude_seen: _Optional[bool] = ...) -> None: ...

class RecommendRequest(_message.Message):
    __slots__ = ("user_id", "k", "filters")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    k: int
    filters: RecommendFilters
    def __init__(self, user_id: _Optional[str] = ..., k: _Optional[int] = ..., filters: _Optional[_Union[RecommendFilters, _Mapping]] = ...) -> None: ...

class RecommendedItem(_message.Message):
    __slots__ = ("item_id", "score")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("items", "strategy", "model_version", "degraded", "degraded_reason", "recommendation_id", "variant", "experiment")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_REASON_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATION_ID_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[RecommendedItem]
    strategy: Strategy
    model_version: str
    degraded: bool
    degraded_reason: str
    recommendation_id: str
    variant: str
    experiment: str
    def __init__(self, items: _Optional[_Iterable[_Union[RecommendedItem, _Mapping]]] = ..., strategy: _Optional[_Union[Strategy, str]] = ..., model_version: _Optional[str] = ..., degraded: _Optional[bool] = ..., degraded_reason: _Optional[str] = ..., recommendation_id: _Optional[str] = ..., variant: _Optional[str] = ..., experiment: _Optional[str] = ...) -> None: ...

class SimilarItemsRequest(_message.Message):
    __slots__ = ("item_id", "k", "filters")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    k: int
    filters: RecommendFilters
    def __init__(self, item_id: _Optional[str] = ..., k: _Optional[int] = ..., filters: _Optional[_Union[RecommendFilters, _Mapping]] = ...) -> None: ...

class SimilarItemsResponse(_message.Message):
    __slots__ = ("items", "model_version", "degraded", "degraded_reason", "recommendation_id", "variant", "experiment")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_REASON_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATION_ID_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[RecommendedItem]
    model_version: str
    degraded: bool
    degraded_reason: str
    recommendation_id: str
    variant: str
    experiment: str
    def __init__(self, items: _Optional[_Iterable[_Union[RecommendedItem, _Mapping]]] = ..., model_version: _Optional[str] = ..., degraded: _Optional[bool] = ..., degraded_reason: _Optional[str] = ..., recommendation_id: _Optional[str] = ..., variant: _Optional[str] = ..., experiment: _Optional[str] = ...) -> None: ...

class TrackEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_events_pb2.Event]
    def __init__(self, events: _Optional[_Iterable[_Union[_events_pb2.Event, _Mapping]]] = ...) -> None: ...

class TrackEventsResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    def __init__(self, accepted: _Optional[int] = ...) -> None: ...
