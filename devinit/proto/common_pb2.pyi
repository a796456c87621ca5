from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StateItem(_message.Message):
    __slots__ = ("key", "value", "etag", "metadata", "options")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    etag: Etag
    metadata: _containers.ScalarMap[str, str]
    options: StateOptions
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ..., etag: _Optional[_Union[Etag, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., options: _Optional[_Union[StateOptions, _Mapping]] = ...) -> None: ...

class Etag(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: str
    def __init__(self, value: _Optional[str] = ...) -> None: ...

class StateOptions(_message.Message):
    __slots__ = ("concurrency", "consistency")
    class StateConcurrency(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        CONCURRENCY_UNSPECIFIED: _ClassVar[StateOptions.StateConcurrency]
        CONCURRENCY_FIRST_WRITE: _ClassVar[StateOptions.StateConcurrency]
        CONCURRENCY_LAST_WRITE: _ClassVar[StateOptions.StateConcurrency]
    CONCURRENCY_UNSPECIFIED: StateOptions.StateConcurrency
    CONCURRENCY_FIRST_WRITE: StateOptions.StateConcurrency
    CONCURRENCY_LAST_WRITE: StateOptions.StateConcurrency
    class StateConsistency(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        CONSISTENCY_UNSPECIFIED: _ClassVar[StateOptions.StateConsistency]
        CONSISTENCY_EVENTUAL: _ClassVar[StateOptions.StateConsistency]
        CONSISTENCY_STRONG: _ClassVar[StateOptions.StateConsistency]
    CONSISTENCY_UNSPECIFIED: StateOptions.StateConsistency
    CONSISTENCY_EVENTUAL: StateOptions.StateConsistency
    CONSISTENCY_STRONG: StateOptions.StateConsistency
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    concurrency: StateOptions.StateConcurrency
    consistency: StateOptions.StateConsistency
    def __init__(self, concurrency: _Optional[_Union[StateOptions.StateConcurrency, str]] = ..., consistency: _Optional[_Union[StateOptions.StateConsistency, str]] = ...) -> None: ...
