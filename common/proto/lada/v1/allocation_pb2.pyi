from lada.common.proto.lada.v1 import messages_pb2 as _messages_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LearnabilityReport(_message.Message):
    __slots__ = ("client_id", "task_id", "round", "stats", "own_paths_blob", "public_accuracy", "has_test_accuracy", "test_accuracy", "bytes_down")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    OWN_PATHS_BLOB_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    HAS_TEST_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    TEST_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    BYTES_DOWN_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    task_id: str
    round: int
    stats: _containers.RepeatedCompositeFieldContainer[_messages_pb2.SampleStats]
    own_paths_blob: str
    public_accuracy: float
    has_test_accuracy: bool
    test_accuracy: float
    bytes_down: int
    def __init__(self, client_id: _Optional[str] = ..., task_id: _Optional[str] = ..., round: _Optional[int] = ..., stats: _Optional[_Iterable[_Union[_messages_pb2.SampleStats, _Mapping]]] = ..., own_paths_blob: _Optional[str] = ..., public_accuracy: _Optional[float] = ..., has_test_accuracy: _Optional[bool] = ..., test_accuracy: _Optional[float] = ..., bytes_down: _Optional[int] = ...) -> None: ...

class AllocationRequest(_message.Message):
    __slots__ = ("client_id", "round", "held_candidates", "holds_own_paths")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    HELD_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    HOLDS_OWN_PATHS_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    round: int
    held_candidates: str
    holds_own_paths: bool
    def __init__(self, client_id: _Optional[str] = ..., round: _Optional[int] = ..., held_candidates: _Optional[str] = ..., holds_own_paths: _Optional[bool] = ...) -> None: ...

class AllocatedSample(_message.Message):
    __slots__ = ("sample_id", "question", "positive", "negative", "score", "rank", "positive_held", "negative_own", "digest")
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_HELD_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_OWN_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    sample_id: str
    question: str
    positive: str
    negative: str
    score: float
    rank: int
    positive_held: bool
    negative_own: bool
    digest: bytes
    def __init__(self, sample_id: _Optional[str] = ..., question: _Optional[str] = ..., positive: _Optional[str] = ..., negative: _Optional[str] = ..., score: _Optional[float] = ..., rank: _Optional[int] = ..., positive_held: _Optional[bool] = ..., negative_own: _Optional[bool] = ..., digest: _Optional[bytes] = ...) -> None: ...

class SampleReward(_message.Message):
    __slots__ = ("sample_id", "nll_before", "nll_after", "alignment")
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    NLL_BEFORE_FIELD_NUMBER: _ClassVar[int]
    NLL_AFTER_FIELD_NUMBER: _ClassVar[int]
    ALIGNMENT_FIELD_NUMBER: _ClassVar[int]
    sample_id: str
    nll_before: float
    nll_after: float
    alignment: float
    def __init__(self, sample_id: _Optional[str] = ..., nll_before: _Optional[float] = ..., nll_after: _Optional[float] = ..., alignment: _Optional[float] = ...) -> None: ...

class RewardReport(_message.Message):
    __slots__ = ("client_id", "task_id", "round", "samples", "test_accuracy", "steps", "train_seconds", "loss_sft", "loss_cd")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    TEST_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LOSS_SFT_FIELD_NUMBER: _ClassVar[int]
    LOSS_CD_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    task_id: str
    round: int
    samples: _containers.RepeatedCompositeFieldContainer[SampleReward]
    test_accuracy: float
    steps: int
    train_seconds: float
    loss_sft: float
    loss_cd: float
    def __init__(self, client_id: _Optional[str] = ..., task_id: _Optional[str] = ..., round: _Optional[int] = ..., samples: _Optional[_Iterable[_Union[SampleReward, _Mapping]]] = ..., test_accuracy: _Optional[float] = ..., steps: _Optional[int] = ..., train_seconds: _Optional[float] = ..., loss_sft: _Optional[float] = ..., loss_cd: _Optional[float] = ...) -> None: ...
