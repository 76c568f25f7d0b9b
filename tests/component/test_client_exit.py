"""A client that cannot do anything useful says why and exits, instead of retrying for
``client.give_up_after`` (issue 15, smaller findings): a plaintext client against a TLS server
(and the other way round) used to log only "server unreachable (UNAVAILABLE), retrying" for 600 s."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import grpc
import pytest
from lada.client.runtime import Connection, TransportMismatch, probe_tls
from lada.common.tls import channel_credentials

from tests.support.paths import TINY, cli, free_port
from tests.support.transport import TOKEN, certs, grpc_server  # noqa: F401 - fixture


def _conn(address: str, tls: grpc.ChannelCredentials | None = None, give_up_after: float = 60.0) -> Connection:
    return Connection(address, "client-1", TOKEN, "", "arith", tls=tls, give_up_after=give_up_after)


@pytest.mark.parametrize("mtls", [False, True])
def test_plaintext_client_against_a_tls_server_says_so_at_once(certs: Path, mtls: bool) -> None:  # noqa: F811
    with grpc_server(certs, mtls=mtls) as srv:
        assert probe_tls(srv.address) is True
        t0 = time.time()
        with pytest.raises(TransportMismatch, match="speaks TLS and this client plaintext.*--client.tls_ca"):
            _conn(srv.address).register()
        assert time.time() - t0 < 10 and not srv.grid.clients


def test_tls_client_against_a_plaintext_server_says_so_at_once(certs: Path) -> None:  # noqa: F811
    with grpc_server(None) as srv:
        assert probe_tls(srv.address) is False
        t0 = time.time()
        with pytest.raises(TransportMismatch, match="does not speak TLS"):
            _conn(srv.address, tls=channel_credentials(str(certs / "ca.pem"))).register()
        assert time.time() - t0 < 10


def test_an_absent_server_is_still_retried() -> None:
    """Nothing listening is a server that may come back: retried until give_up_after, not a mismatch."""
    address = f"127.0.0.1:{free_port()}"
    assert probe_tls(address) is None
    t0 = time.time()
    with pytest.raises(grpc.RpcError) as e:
        _conn(address, give_up_after=2.0).register()
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and time.time() - t0 >= 2.0


def test_lada_client_without_tls_exits_against_a_tls_server(certs: Path, tiny_overrides: dict,  # noqa: F811
                                                           tmp_path: Path) -> None:
    with grpc_server(certs) as srv:
        r = subprocess.run(cli("client", "--config", str(TINY), "--name", "client-1",
                               "--models.cache_dir", tiny_overrides["models.cache_dir"],
                               "--server.address", srv.address, "--client.state_dir", str(tmp_path / "s")),
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "speaks TLS and this client plaintext" in r.stderr and "Traceback" not in r.stderr
