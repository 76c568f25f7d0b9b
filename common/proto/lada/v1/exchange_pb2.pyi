from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Chunk(_message.Message):
    __slots__ = ("blob_id", "index", "total", "data", "chunk_digest", "blob_size", "client_id")
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CHUNK_DIGEST_FIELD_NUMBER: _ClassVar[int]
    BLOB_SIZE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    blob_id: str
    index: int
    total: int
    data: bytes
    chunk_digest: str
    blob_size: int
    client_id: str
    def __init__(self, blob_id: _Optional[str] = ..., index: _Optional[int] = ..., total: _Optional[int] = ..., data: _Optional[bytes] = ..., chunk_digest: _Optional[str] = ..., blob_size: _Optional[int] = ..., client_id: _Optional[str] = ...) -> None: ...

class UploadReply(_message.Message):
    __slots__ = ("blob_id", "size", "already_present", "complete", "received", "total")
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    blob_id: str
    size: int
    already_present: bool
    complete: bool
    received: int
    total: int
    def __init__(self, blob_id: _Optional[str] = ..., size: _Optional[int] = ..., already_present: _Optional[bool] = ..., complete: _Optional[bool] = ..., received: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class UploadQuery(_message.Message):
    __slots__ = ("blob_id", "client_id")
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    blob_id: str
    client_id: str
    def __init__(self, blob_id: _Optional[str] = ..., client_id: _Optional[str] = ...) -> None: ...

class UploadState(_message.Message):
    __slots__ = ("present", "received_chunks", "total", "blob_size")
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    BLOB_SIZE_FIELD_NUMBER: _ClassVar[int]
    present: bool
    received_chunks: _containers.RepeatedScalarFieldContainer[int]
    total: int
    blob_size: int
    def __init__(self, present: _Optional[bool] = ..., received_chunks: _Optional[_Iterable[int]] = ..., total: _Optional[int] = ..., blob_size: _Optional[int] = ...) -> None: ...

class DownloadRequest(_message.Message):
    __slots__ = ("blob_id", "from_chunk", "client_id")
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_CHUNK_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    blob_id: str
    from_chunk: int
    client_id: str
    def __init__(self, blob_id: _Optional[str] = ..., from_chunk: _Optional[int] = ..., client_id: _Optional[str] = ...) -> None: ...
