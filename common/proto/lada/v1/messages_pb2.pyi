from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_KIND_UNSPECIFIED: _ClassVar[TaskKind]
    TASK_KIND_PROBE: _ClassVar[TaskKind]
    TASK_KIND_TRAIN: _ClassVar[TaskKind]
    TASK_KIND_WAIT: _ClassVar[TaskKind]
    TASK_KIND_STOP: _ClassVar[TaskKind]
TASK_KIND_UNSPECIFIED: TaskKind
TASK_KIND_PROBE: TaskKind
TASK_KIND_TRAIN: TaskKind
TASK_KIND_WAIT: TaskKind
TASK_KIND_STOP: TaskKind

class ReasoningPath(_message.Message):
    __slots__ = ("sample_id", "question", "text", "correct", "answer")
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    sample_id: str
    question: str
    text: str
    correct: bool
    answer: str
    def __init__(self, sample_id: _Optional[str] = ..., question: _Optional[str] = ..., text: _Optional[str] = ..., correct: _Optional[bool] = ..., answer: _Optional[str] = ...) -> None: ...

class PathBatch(_message.Message):
    __slots__ = ("paths",)
    PATHS_FIELD_NUMBER: _ClassVar[int]
    paths: _containers.RepeatedCompositeFieldContainer[ReasoningPath]
    def __init__(self, paths: _Optional[_Iterable[_Union[ReasoningPath, _Mapping]]] = ...) -> None: ...

class PathDelta(_message.Message):
    __slots__ = ("base_blob_id", "blob_id", "order", "paths", "count", "sha256")
    BASE_BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    base_blob_id: str
    blob_id: str
    order: _containers.RepeatedScalarFieldContainer[str]
    paths: _containers.RepeatedCompositeFieldContainer[ReasoningPath]
    count: int
    sha256: str
    def __init__(self, base_blob_id: _Optional[str] = ..., blob_id: _Optional[str] = ..., order: _Optional[_Iterable[str]] = ..., paths: _Optional[_Iterable[_Union[ReasoningPath, _Mapping]]] = ..., count: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class SampleStats(_message.Message):
    __slots__ = ("sample_id", "nll", "sender_len", "own_len", "own_correct", "sender_correct", "answer_ce")
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    NLL_FIELD_NUMBER: _ClassVar[int]
    SENDER_LEN_FIELD_NUMBER: _ClassVar[int]
    OWN_LEN_FIELD_NUMBER: _ClassVar[int]
    OWN_CORRECT_FIELD_NUMBER: _ClassVar[int]
    SENDER_CORRECT_FIELD_NUMBER: _ClassVar[int]
    ANSWER_CE_FIELD_NUMBER: _ClassVar[int]
    sample_id: str
    nll: float
    sender_len: int
    own_len: int
    own_correct: bool
    sender_correct: bool
    answer_ce: float
    def __init__(self, sample_id: _Optional[str] = ..., nll: _Optional[float] = ..., sender_len: _Optional[int] = ..., own_len: _Optional[int] = ..., own_correct: _Optional[bool] = ..., sender_correct: _Optional[bool] = ..., answer_ce: _Optional[float] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "round", "kind", "blob_id", "evaluate", "run_name", "blob_size", "retry_after_s", "run_key", "delta_blob_id", "delta_base", "delta_blob_size", "align_items", "align_center")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    EVALUATE_FIELD_NUMBER: _ClassVar[int]
    RUN_NAME_FIELD_NUMBER: _ClassVar[int]
    BLOB_SIZE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    RUN_KEY_FIELD_NUMBER: _ClassVar[int]
    DELTA_BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    DELTA_BASE_FIELD_NUMBER: _ClassVar[int]
    DELTA_BLOB_SIZE_FIELD_NUMBER: _ClassVar[int]
    ALIGN_ITEMS_FIELD_NUMBER: _ClassVar[int]
    ALIGN_CENTER_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    round: int
    kind: TaskKind
    blob_id: str
    evaluate: bool
    run_name: str
    blob_size: int
    retry_after_s: float
    run_key: str
    delta_blob_id: str
    delta_base: str
    delta_blob_size: int
    align_items: int
    align_center: bool
    def __init__(self, task_id: _Optional[str] = ..., round: _Optional[int] = ..., kind: _Optional[_Union[TaskKind, str]] = ..., blob_id: _Optional[str] = ..., evaluate: _Optional[bool] = ..., run_name: _Optional[str] = ..., blob_size: _Optional[int] = ..., retry_after_s: _Optional[float] = ..., run_key: _Optional[str] = ..., delta_blob_id: _Optional[str] = ..., delta_base: _Optional[str] = ..., delta_blob_size: _Optional[int] = ..., align_items: _Optional[int] = ..., align_center: _Optional[bool] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("ok", "message")
    OK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    message: str
    def __init__(self, ok: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...
