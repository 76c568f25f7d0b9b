"""What the server checks before a client enrols or before it serves at all (issue 15, smaller
findings): a client must run the SLM the run's config gives its name, and the public default join
token is refused on an address other hosts can reach."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import grpc
import pytest
from lada.client.runtime import Connection
from lada.common.config import LadaConfig
from lada.common.proto.lada.v1 import coordinator_pb2
from lada.server.auth import default_token_exposed

from tests.support.paths import TINY, cli, free_port
from tests.support.transport import TOKEN, grpc_server, stubs

MODELS = dict(LadaConfig().models.clients)


def test_register_refuses_a_client_with_another_model() -> None:
    with grpc_server(models=MODELS) as srv:
        s = stubs(srv.channel())

        def enrol(model: str) -> coordinator_pb2.RegisterReply:
            return s.coord.Register(coordinator_pb2.RegisterRequest(
                join_token=TOKEN, client_name="client-1", model=model, protocol_version=1, instance_id="i"),
                timeout=10)

        with pytest.raises(grpc.RpcError) as e:
            enrol("embedded:slm-llama")
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'embedded:slm-gpt2'" in e.value.details() and "'embedded:slm-llama'" in e.value.details()
        assert not srv.grid.clients  # nothing enrolled, no event
        # the real client with the wrong model is refused too, at once (not retried)
        conn = Connection(srv.address, "client-1", TOKEN, "embedded:slm-llama", "arith")
        t0 = time.time()
        with pytest.raises(grpc.RpcError, match="models.clients"):
            conn.register()
        assert time.time() - t0 < 5 and not srv.grid.clients
        enrol("embedded:slm-gpt2")
        assert srv.grid.clients["client-1"].model == "embedded:slm-gpt2"


def test_default_join_token_is_exposed_only_beyond_loopback() -> None:
    default = LadaConfig().server.join_token
    for addr in ("0.0.0.0:50051", "[::]:50051", "10.1.2.3:50051", "lada.example.org:50051"):
        assert default_token_exposed(addr, default), addr
    for addr in ("127.0.0.1:50051", "127.0.0.2:1", "[::1]:50051", "localhost:50051", "unix:/tmp/lada.sock"):
        assert not default_token_exposed(addr, default), addr
    assert not default_token_exposed("0.0.0.0:50051", "a-real-s3cret")


def _server(tmp_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        cli("server", "--config", str(TINY), "--server.address", f"0.0.0.0:{free_port()}",
            "--server.data_dir", str(tmp_path / "data"), *extra),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_lada_server_refuses_the_default_token_on_a_public_address(tmp_path: Path) -> None:
    p = _server(tmp_path)
    try:
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 2, err[-2000:]
    assert "public default" in err and "--server.join_token" in err and "allow_default_token" in err
    assert not (tmp_path / "data").exists()  # refused before any work
    # the explicit knob turns the refusal into a loud warning
    p = _server(tmp_path, "--transport.allow_default_token", "true", "--models.cache_dir", str(tmp_path / "m"))
    try:
        assert p.stderr is not None
        line = p.stderr.readline()
        assert "WARNING" in line and "public default" in line
    finally:
        p.kill()
        p.communicate()
