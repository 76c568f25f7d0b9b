from lada.common.proto.lada.v1 import messages_pb2 as _messages_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterRequest(_message.Message):
    __slots__ = ("join_token", "client_name", "model", "domain", "protocol_version", "instance_id")
    JOIN_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    join_token: str
    client_name: str
    model: str
    domain: str
    protocol_version: int
    instance_id: str
    def __init__(self, join_token: _Optional[str] = ..., client_name: _Optional[str] = ..., model: _Optional[str] = ..., domain: _Optional[str] = ..., protocol_version: _Optional[int] = ..., instance_id: _Optional[str] = ...) -> None: ...

class RegisterReply(_message.Message):
    __slots__ = ("client_id", "credential", "run_id", "heartbeat_interval_s", "credential_expires_unix")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    credential: str
    run_id: int
    heartbeat_interval_s: float
    credential_expires_unix: int
    def __init__(self, client_id: _Optional[str] = ..., credential: _Optional[str] = ..., run_id: _Optional[int] = ..., heartbeat_interval_s: _Optional[float] = ..., credential_expires_unix: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("client_id",)
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    def __init__(self, client_id: _Optional[str] = ...) -> None: ...

class HeartbeatReply(_message.Message):
    __slots__ = ("round", "server_time_unix", "heartbeat_interval_s")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_UNIX_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    round: int
    server_time_unix: int
    heartbeat_interval_s: float
    def __init__(self, round: _Optional[int] = ..., server_time_unix: _Optional[int] = ..., heartbeat_interval_s: _Optional[float] = ...) -> None: ...

class PullTaskRequest(_message.Message):
    __slots__ = ("client_id", "wait_s")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_S_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    wait_s: float
    def __init__(self, client_id: _Optional[str] = ..., wait_s: _Optional[float] = ...) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ("client_id", "reason")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    reason: str
    def __init__(self, client_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
