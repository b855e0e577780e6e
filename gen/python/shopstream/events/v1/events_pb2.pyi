import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_VIEW: _ClassVar[EventType]
    EVENT_TYPE_CLICK: _ClassVar[EventType]
    EVENT_TYPE_ADD_TO_CART: _ClassVar[EventType]
    EVENT_TYPE_PURCHASE: _ClassVar[EventType]

class Device(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_UNSPECIFIED: _ClassVar[Device]
    DEVICE_DESKTOP: _ClassVar[Device]
    DEVICE_MOBILE: _ClassVar[Device]
    DEVICE_TABLET: _ClassVar[Device]
    DEVICE_APP: _ClassVar[Device]
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_VIEW: EventType
EVENT_TYPE_CLICK: EventType
EVENT_TYPE_ADD_TO_CART: EventType
EVENT_TYPE_PURCHASE: EventType
DEVICE_UNSPECIFIED: Device
DEVICE_DESKTOP: Device
DEVICE_MOBILE: Device
DEVICE_TABLET: Device
DEVICE_APP: Device

class EventContext(_message.Message):
    __slots__ = ("page", "device")
    PAGE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    page: str
    device: Device
    def __init__(self, page: _Optional[str] = ..., device: _Optional[_Union[Device, str]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "user_id", "item_id", "type", "occurred_at", "session_id", "context", "recommendation_id", "position", "value")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATION_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    item_id: str
    type: EventType
    occurred_at: _timestamp_pb2.Timestamp
    session_id: str
    context: EventContext
    recommendation_id: str
    position: int
    value: float
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., item_id: _Optional[str] = ..., type: _Optional[_Union[EventType, str]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., session_id: _Optional[str] = ..., context: _Optional[_Union[EventContext, _Mapping]] = ..., recommendation_id: _Optional[str] = ..., position: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...

class Impression(_message.Message):
    __slots__ = ("recommendation_id", "user_id", "variant", "experiment", "model_version", "surface", "item_ids", "served_at", "degraded")
    RECOMMENDATION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    SERVED_AT_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    recommendation_id: str
    user_id: str
    variant: str
    experiment: str
    model_version: str
    surface: str
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    served_at: _timestamp_pb2.Timestamp
    degraded: bool
    def __init__(self, recommendation_id: _Optional[str] = ..., user_id: _Optional[str] = ..., variant: _Optional[str] = ..., experiment: _Optional[str] = ..., model_version: _Optional[str] = ..., surface: _Optional[str] = ..., item_ids: _Optional[_Iterable[str]] = ..., served_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., degraded: _Optional[bool] = ...) -> None: ...

class ImpressionBatch(_message.Message):
    __slots__ = ("impressions",)
    IMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    impressions: _containers.RepeatedCompositeFieldContainer[Impression]
    def __init__(self, impressions: _Optional[_Iterable[_Union[Impression, _Mapping]]] = ...) -> None: ...
