from google.protobuf import struct_pb2 as _struct_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ItemFilter(_message.Message):
    __slots__ = ("include_categories", "exclude_categories", "exclude_item_ids", "in_stock_only", "exclude_seen", "exclude_purchased")
    INCLUDE_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    IN_STOCK_ONLY_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_SEEN_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_PURCHASED_FIELD_NUMBER: _ClassVar[int]
    include_categories: _containers.RepeatedScalarFieldContainer[str]
    exclude_categories: _containers.RepeatedScalarFieldContainer[str]
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    in_stock_only: bool
    exclude_seen: bool
    exclude_purchased: bool
    def __init__(self, include_categories: _Optional[_Iterable[str]] = ..., exclude_categories: _Optional[_Iterable[str]] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., in_stock_only: _Optional[bool] = ..., exclude_seen: _Optional[bool] = ..., exclude_purchased: _Optional[bool] = ...) -> None: ...

class RankRequest(_message.Message):
    __slots__ = ("user_id", "k", "filter", "model_version", "filter_expression", "filter_params", "boosts", "diversity", "max_per_category")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FILTER_EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    FILTER_PARAMS_FIELD_NUMBER: _ClassVar[int]
    BOOSTS_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    MAX_PER_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    k: int
    filter: ItemFilter
    model_version: str
    filter_expression: str
    filter_params: _struct_pb2.Struct
    boosts: _containers.RepeatedCompositeFieldContainer[ScoreBoost]
    diversity: float
    max_per_category: int
    def __init__(self, user_id: _Optional[str] = ..., k: _Optional[int] = ..., filter: _Optional[_Union[ItemFilter, _Mapping]] = ..., model_version: _Optional[str] = ..., filter_expression: _Optional[str] = ..., filter_params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., boosts: _Optional[_Iterable[_Union[ScoreBoost, _Mapping]]] = ..., diversity: _Optional[float] = ..., max_per_category: _Optional[int] = ...) -> None: ...

class ScoreBoost(_message.Message):
    __slots__ = ("field", "values", "weight")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    field: str
    values: _containers.RepeatedScalarFieldContainer[str]
    weight: float
    def __init__(self, field: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ..., weight: _Optional[float] = ...) -> None: ...

class ScoredItem(_message.Message):
    __slots__ = ("item_id", "score", "reason_item_id", "reason_strength", "new_arrival")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REASON_ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    NEW_ARRIVAL_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    reason_item_id: str
    reason_strength: float
    new_arrival: bool
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ..., reason_item_id: _Optional[str] = ..., reason_strength: _Optional[float] = ..., new_arrival: _Optional[bool] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("items", "model_version", "user_known", "embedding_source")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    USER_KNOWN_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_SOURCE_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    model_version: str
    user_known: bool
    embedding_source: str
    def __init__(self, items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., model_version: _Optional[str] = ..., user_known: _Optional[bool] = ..., embedding_source: _Optional[str] = ...) -> None: ...

class SimilarRequest(_message.Message):
    __slots__ = ("item_id", "k", "filter", "model_version")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    k: int
    filter: ItemFilter
    model_version: str
    def __init__(self, item_id: _Optional[str] = ..., k: _Optional[int] = ..., filter: _Optional[_Union[ItemFilter, _Mapping]] = ..., model_version: _Optional[str] = ...) -> None: ...

class SimilarResponse(_message.Message):
    __slots__ = ("items", "model_version")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    model_version: str
    def __init__(self, items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...

class RankBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RankRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[RankRequest, _Mapping]]] = ...) -> None: ...

class RankOutcome(_message.Message):
    __slots__ = ("response", "error")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response: RankResponse
    error: _status_pb2.Status
    def __init__(self, response: _Optional[_Union[RankResponse, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class RankBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RankOutcome]
    def __init__(self, results: _Optional[_Iterable[_Union[RankOutcome, _Mapping]]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("version", "live", "catalog_items", "embedding_bytes", "session_bytes", "total_bytes")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    CATALOG_ITEMS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_BYTES_FIELD_NUMBER: _ClassVar[int]
    SESSION_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    version: str
    live: bool
    catalog_items: int
    embedding_bytes: int
    session_bytes: int
    total_bytes: int
    def __init__(self, version: _Optional[str] = ..., live: _Optional[bool] = ..., catalog_items: _Optional[int] = ..., embedding_bytes: _Optional[int] = ..., session_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class UnloadedModel(_message.Message):
    __slots__ = ("version", "reason")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    version: str
    reason: str
    def __init__(self, version: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "not_loaded", "max_models")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NOT_LOADED_FIELD_NUMBER: _ClassVar[int]
    MAX_MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    not_loaded: _containers.RepeatedCompositeFieldContainer[UnloadedModel]
    max_models: int
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., not_loaded: _Optional[_Iterable[_Union[UnloadedModel, _Mapping]]] = ..., max_models: _Optional[int] = ...) -> None: ...
