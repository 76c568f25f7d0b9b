"""The server's transfer store is bounded to twice the largest blob by default (issue 15).

It was 8 x the largest blob (4 x server.max_message_mb): 2 GiB of other people's
unfinished uploads held in the server's memory with the default config. Here
three real clients each leave an unfinished upload of 3/4 of the largest blob on
a real gRPC server: the third is refused with RESOURCE_EXHAUSTED (reason
STORE_FULL) instead of being held.
"""

from __future__ import annotations

import grpc
import pytest
from lada.common import chunks, errors
from lada.common.config import ConfigError, LadaConfig, config_from_args

from lada import cli
from tests.support.transport import CLIENTS, grpc_server, register, stubs

MAX_MESSAGE_MB = 1
MAX_BLOB = 4 * MAX_MESSAGE_MB << 20
CHUNK = 256 << 10


def test_default_store_is_two_blobs() -> None:
    cfg = LadaConfig()
    assert cfg.max_blob_bytes == 4 * cfg.server.max_message_mb << 20
    assert cfg.store_bytes == 2 * cfg.max_blob_bytes == 512 << 20, "512 MiB with the default 64 MiB messages"
    assert LadaConfig.load(overrides={"transport.store_mb": 300}).store_bytes == 300 << 20


def test_a_store_too_small_for_one_blob_is_refused_before_work() -> None:
    args = cli.build_parser().parse_args(["server", "--transport.store_mb", "100"])
    with pytest.raises(ConfigError, match=r"transport.store_mb \(100\) must hold the largest blob.*256 MiB"):
        config_from_args(args)


def test_unfinished_uploads_stop_at_two_blobs() -> None:
    with grpc_server(max_message_mb=MAX_MESSAGE_MB, chunk_size=CHUNK) as srv:
        held = 0
        for i, name in enumerate(sorted(CLIENTS)):
            s = register(stubs(srv.channel()), name)
            data = bytes([i + 1]) * (MAX_BLOB * 3 // 4)
            parts = list(chunks.split(data, CHUNK, name))[:-1]  # all but the last chunk: left unfinished
            try:
                reply = s.exchange.Upload(iter(parts), metadata=s.md, timeout=30)
            except grpc.RpcError as e:
                assert i == 2, f"{name}'s upload refused although only {held} bytes are held"
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert errors.reason_of(e) == errors.STORE_FULL
                break
            assert not reply.complete and reply.received == len(parts)
            held += sum(len(p.data) for p in parts)
        else:
            pytest.fail(f"{held} bytes of unfinished uploads held (the store's cap: {srv.grid.blobs.max_bytes})")
        assert srv.grid.blobs.nbytes <= srv.grid.blobs.max_bytes == 2 * MAX_BLOB
