from google.protobuf import struct_pb2 as _struct_pb2
from shopstream.events.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReasonKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REASON_KIND_UNSPECIFIED: _ClassVar[ReasonKind]
    REASON_KIND_BECAUSE_YOU_INTERACTED: _ClassVar[ReasonKind]
    REASON_KIND_SIMILAR_TO: _ClassVar[ReasonKind]
    REASON_KIND_TRENDING_IN_CATEGORY: _ClassVar[ReasonKind]
    REASON_KIND_NEW_ARRIVAL: _ClassVar[ReasonKind]
    REASON_KIND_FILLER: _ClassVar[ReasonKind]
    REASON_KIND_PINNED: _ClassVar[ReasonKind]

class Strategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRATEGY_UNSPECIFIED: _ClassVar[Strategy]
    STRATEGY_PERSONALIZED: _ClassVar[Strategy]
    STRATEGY_TRENDING: _ClassVar[Strategy]
REASON_KIND_UNSPECIFIED: ReasonKind
REASON_KIND_BECAUSE_YOU_INTERACTED: ReasonKind
REASON_KIND_SIMILAR_TO: ReasonKind
REASON_KIND_TRENDING_IN_CATEGORY: ReasonKind
REASON_KIND_NEW_ARRIVAL: ReasonKind
REASON_KIND_FILLER: ReasonKind
REASON_KIND_PINNED: ReasonKind
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
    __slots__ = ("user_id", "k", "filters", "filter_name", "filter_params", "boosts", "pins", "diversity", "max_per_category", "personalize")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    FILTER_NAME_FIELD_NUMBER: _ClassVar[int]
    FILTER_PARAMS_FIELD_NUMBER: _ClassVar[int]
    BOOSTS_FIELD_NUMBER: _ClassVar[int]
    PINS_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    MAX_PER_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    PERSONALIZE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    k: int
    filters: RecommendFilters
    filter_name: str
    filter_params: _struct_pb2.Struct
    boosts: _containers.RepeatedCompositeFieldContainer[Boost]
    pins: _containers.RepeatedCompositeFieldContainer[Pin]
    diversity: float
    max_per_category: int
    personalize: bool
    def __init__(self, user_id: _Optional[str] = ..., k: _Optional[int] = ..., filters: _Optional[_Union[RecommendFilters, _Mapping]] = ..., filter_name: _Optional[str] = ..., filter_params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., boosts: _Optional[_Iterable[_Union[Boost, _Mapping]]] = ..., pins: _Optional[_Iterable[_Union[Pin, _Mapping]]] = ..., diversity: _Optional[float] = ..., max_per_category: _Optional[int] = ..., personalize: _Optional[bool] = ...) -> None: ...

class Boost(_message.Message):
    __slots__ = ("field", "values", "weight")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    field: str
    values: _containers.RepeatedScalarFieldContainer[str]
    weight: float
    def __init__(self, field: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ..., weight: _Optional[float] = ...) -> None: ...

class Pin(_message.Message):
    __slots__ = ("item_id", "position")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    position: int
    def __init__(self, item_id: _Optional[str] = ..., position: _Optional[int] = ...) -> None: ...

class Reason(_message.Message):
    __slots__ = ("kind", "evidence_item_id", "evidence_title", "text")
    KIND_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_TITLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    kind: ReasonKind
    evidence_item_id: str
    evidence_title: str
    text: str
    def __init__(self, kind: _Optional[_Union[ReasonKind, str]] = ..., evidence_item_id: _Optional[str] = ..., evidence_title: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class RecommendedItem(_message.Message):
    __slots__ = ("item_id", "score", "reason")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    reason: Reason
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ..., reason: _Optional[_Union[Reason, _Mapping]] = ...) -> None: ...

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

class FilterExpression(_message.Message):
    __slots__ = ("name", "expression", "parameters")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    expression: str
    parameters: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., expression: _Optional[str] = ..., parameters: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateFilterRequest(_message.Message):
    __slots__ = ("filter",)
    FILTER_FIELD_NUMBER: _ClassVar[int]
    filter: FilterExpression
    def __init__(self, filter: _Optional[_Union[FilterExpression, _Mapping]] = ...) -> None: ...

class ListFiltersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFiltersResponse(_message.Message):
    __slots__ = ("filters",)
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    filters: _containers.RepeatedCompositeFieldContainer[FilterExpression]
    def __init__(self, filters: _Optional[_Iterable[_Union[FilterExpression, _Mapping]]] = ...) -> None: ...

class DeleteFilterRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteFilterResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class ForgetUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ForgetUserResponse(_message.Message):
    __slots__ = ("keys_deleted",)
    KEYS_DELETED_FIELD_NUMBER: _ClassVar[int]
    keys_deleted: int
    def __init__(self, keys_deleted: _Optional[int] = ...) -> None: ...
