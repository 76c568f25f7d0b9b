"""Authentication: join token -> signed, expiring, per-client credential checked on
every RPC; mutual TLS binds the certificate to the client name.

The server here is the production gRPC server (same servicers, interceptor and
TLS credentials) on a TCP port in this process, so its state can be inspected;
test_faults.py covers the same paths against real ``lada server`` processes.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from lada.client.runtime import Connection, SupersededError
from lada.common.proto.lada.v1 import allocation_pb2, coordinator_pb2, exchange_pb2, messages_pb2
from lada.common.tls import channel_credentials
from lada.server.auth import AuthError, Credentials, load_secret

from tests.support.transport import (
    METHODS,
    SECRET,
    TOKEN,
    certs,  # noqa: F401 - fixture
    code_of,
    dispatch,
    grpc_server,
    make_certs,
    raw_call,
    register,
    snapshot,
    stubs,
)

UNAUTH = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED


# ---------------------------------------------------------------------- credentials
def test_credential_signature_expiry_and_tampering() -> None:
    c = Credentials(SECRET, TOKEN, ttl_s=60)
    cred, exp, nonce = c.issue("client-1", now=1000.0)
    assert exp == 1060 and c.verify(cred, now=1000.0).client_id == "client-1"
    assert c.verify(cred, now=1000.0).nonce == nonce
    cid, n, e, sig = cred.rsplit(".", 3)
    forged = [
        f"client-2.{n}.{e}.{sig}",             # another client's name under client-1's signature
        f"{cid}.{n}.{int(e) + 10**6}.{sig}",   # extended expiry
        f"{cid}.{n}.{e}.{sig[:-2]}AA",         # altered signature
        f"{cid}.{n}.{e}",                      # no signature
        "", ".", "a.b.c.d", "x" * 10_000,
    ]
    for f in forged:
        with pytest.raises(AuthError):
            c.verify(f, now=1000.0)
    with pytest.raises(AuthError, match="expired"):
        c.verify(cred, now=1061.0)
    with pytest.raises(AuthError, match="signature"):
        Credentials(b"another-secret-of-32-bytes------", TOKEN).verify(cred, now=1000.0)
    with pytest.raises(AuthError):
        c.check_join_token("wrong")
    with pytest.raises(ValueError):
        Credentials(SECRET, "")


def test_secret_persists_and_is_private(tmp_path: Path) -> None:
    a = load_secret(tmp_path)
    assert len(a) == 32 and load_secret(tmp_path) == a
    assert (tmp_path / "server.secret").stat().st_mode & 0o077 == 0


# ---------------------------------------------------------------------- every RPC, over mutual TLS
def test_every_rpc_rejects_missing_forged_and_expired_credentials(certs: Path) -> None:  # noqa: F811
    other = Credentials(b"x" * 32, TOKEN)
    with grpc_server(certs, mtls=True) as srv:
        ch = srv.channel("client-1")
        good = register(stubs(ch), "client-1")
        expired, _, _ = srv.grid.creds.issue("client-1", now=time.time() - 2 * 3600)
        forged, _, _ = other.issue("client-1")
        bad_md = {
            "missing": (),
            "not bearer": [("authorization", good.credential)],
            "forged": [("authorization", f"Bearer {forged}")],
            "expired": [("authorization", f"Bearer {expired}")],
            "garbage": [("authorization", "Bearer ....")],
        }
        before = snapshot(srv.grid)
        for method, cs, _ in METHODS:
            if method.endswith("/Register"):
                continue
            for what, md in bad_md.items():
                code = code_of(lambda m=method, md=md, cs=cs: raw_call(ch, m, [b""] if cs else b"", md))
                assert code == UNAUTH, f"{method} with a {what} credential gave {code}"
        assert snapshot(srv.grid) == before
        # the genuine credential works
        assert code_of(lambda: good.coord.Heartbeat(coordinator_pb2.HeartbeatRequest(client_id="client-1"),
                                                    metadata=good.md, timeout=5)) == grpc.StatusCode.OK


def test_register_needs_the_join_token_and_a_known_name(certs: Path) -> None:  # noqa: F811
    with grpc_server(certs, mtls=True) as srv:
        s = stubs(srv.channel("client-1"))
        assert code_of(lambda: register(s, "client-1", token="wrong")) == UNAUTH
        assert code_of(lambda: register(s, "client-1", token="")) == UNAUTH
        assert not srv.grid.clients
        # mTLS binds the certificate to the name: client-1's certificate cannot enrol as client-2
        assert code_of(lambda: register(s, "client-2")) == DENIED
        assert not srv.grid.clients
        register(s, "client-1")
        assert list(srv.grid.clients) == ["client-1"]


def test_mutual_tls_needs_a_certificate_from_the_ca(certs: Path, tmp_path: Path) -> None:  # noqa: F811
    rogue = make_certs(tmp_path / "rogue", clients="client-1")  # a CA the server does not trust
    with grpc_server(certs, mtls=True) as srv:
        no_cert = stubs(srv.channel(None))
        assert code_of(lambda: register(no_cert, "client-1")) == grpc.StatusCode.UNAVAILABLE
        rogue_ch = grpc.secure_channel(srv.address, channel_credentials(
            str(certs / "ca.pem"), str(rogue / "clients" / "client-1.pem"), str(rogue / "clients" / "client-1.key")))
        assert code_of(lambda: register(stubs(rogue_ch), "client-1")) == grpc.StatusCode.UNAVAILABLE
        # a plaintext client cannot talk to a TLS server at all
        plain = stubs(grpc.insecure_channel(srv.address))
        assert code_of(lambda: register(plain, "client-1")) == grpc.StatusCode.UNAVAILABLE
        assert not srv.grid.clients


def test_a_client_cannot_act_for_another(certs: Path) -> None:  # noqa: F811
    with grpc_server(certs) as srv:  # TLS; the credential alone decides who is calling
        a = register(stubs(srv.channel()), "client-1")
        b = register(stubs(srv.channel()), "client-2")
        probe = dispatch(srv.grid, messages_pb2.TASK_KIND_PROBE, ["client-1", "client-2"])
        bid = srv.grid.blobs.put(messages_pb2.PathBatch().SerializeToString(), reader="client-2")
        before = snapshot(srv.grid)
        md = a.md  # client-1's credential, naming client-2 in the request
        calls = {
            "Heartbeat": lambda: a.coord.Heartbeat(coordinator_pb2.HeartbeatRequest(client_id="client-2"),
                                                   metadata=md, timeout=5),
            "PullTask": lambda: a.coord.PullTask(coordinator_pb2.PullTaskRequest(client_id="client-2", wait_s=0),
                                                 metadata=md, timeout=5),
            "Leave": lambda: a.coord.Leave(coordinator_pb2.LeaveRequest(client_id="client-2"), metadata=md,
                                           timeout=5),
            "ReportLearnability": lambda: a.alloc.ReportLearnability(allocation_pb2.LearnabilityReport(
                client_id="client-2", task_id=probe["client-2"], round=1, own_paths_blob=bid), metadata=md,
                timeout=5),
            "GetAllocation": lambda: list(a.alloc.GetAllocation(allocation_pb2.AllocationRequest(
                client_id="client-2", round=1), metadata=md, timeout=5)),
            "ReportReward": lambda: a.alloc.ReportReward(allocation_pb2.RewardReport(
                client_id="client-2", task_id=probe["client-2"], round=1), metadata=md, timeout=5),
            "QueryUpload": lambda: a.exchange.QueryUpload(exchange_pb2.UploadQuery(
                client_id="client-2", blob_id=bid), metadata=md, timeout=5),
            "Download": lambda: list(a.exchange.Download(exchange_pb2.DownloadRequest(
                client_id="client-2", blob_id=bid), metadata=md, timeout=5)),
            "Upload": lambda: a.exchange.Upload(iter([exchange_pb2.Chunk(
                blob_id="0" * 64, chunk_digest="0" * 64, index=0, total=1, client_id="client-2")]),
                metadata=md, timeout=5),
        }
        for name, fn in calls.items():
            assert code_of(fn) == DENIED, name
        # client-2's own task, without naming anyone: client-1 still cannot finish it
        assert code_of(lambda: a.alloc.ReportLearnability(allocation_pb2.LearnabilityReport(
            task_id=probe["client-2"], round=1, own_paths_blob=bid), metadata=md, timeout=5)) == \
            grpc.StatusCode.FAILED_PRECONDITION
        # ... nor read client-2's uploads
        assert code_of(lambda: list(a.exchange.Download(exchange_pb2.DownloadRequest(blob_id=bid), metadata=md,
                                                        timeout=5))) == grpc.StatusCode.NOT_FOUND
        assert snapshot(srv.grid) == before
        assert "client-2" in srv.grid.clients and b.credential


def test_reenrolment_supersedes_the_old_credential(certs: Path) -> None:  # noqa: F811
    with grpc_server(certs) as srv:
        s = register(stubs(srv.channel()), "client-1", instance="one")
        old = s.credential
        register(s, "client-1", instance="one")
        assert s.credential != old
        hb = coordinator_pb2.HeartbeatRequest(client_id="client-1")
        with pytest.raises(grpc.RpcError) as e:
            s.coord.Heartbeat(hb, metadata=[("authorization", f"Bearer {old}")], timeout=5)
        assert e.value.code() == UNAUTH and "superseded" in e.value.details()
        s.coord.Heartbeat(hb, metadata=s.md, timeout=5)


def test_a_replayed_report_is_acknowledged_once_and_stored_once() -> None:
    with grpc_server() as srv:
        s = register(stubs(srv.channel()), "client-1")
        task = dispatch(srv.grid, messages_pb2.TASK_KIND_TRAIN, ["client-1"])["client-1"]
        rep = allocation_pb2.RewardReport(client_id="client-1", task_id=task, round=1, test_accuracy=0.5,
                                          samples=[allocation_pb2.SampleReward(sample_id=f"s{i}", nll_before=2.0,
                                                                               nll_after=1.5) for i in range(3)])
        assert s.alloc.ReportReward(rep, metadata=s.md, timeout=5).ok
        stored = snapshot(srv.grid)
        again = s.alloc.ReportReward(rep, metadata=s.md, timeout=5)
        assert again.ok and "duplicate" in again.message
        rep.test_accuracy = 0.9  # a replay with other content changes nothing either
        assert "duplicate" in s.alloc.ReportReward(rep, metadata=s.md, timeout=5).message
        assert snapshot(srv.grid) == stored
        assert srv.grid.rewards[(1, "client-1")].test_accuracy == pytest.approx(0.5)


# ---------------------------------------------------------------------- the client runtime
def test_client_reenrols_when_its_credential_expires_or_the_server_forgets_it() -> None:
    with grpc_server(ttl_s=1.0) as srv:
        conn = Connection(srv.address, "client-1", TOKEN, "m", "arith", call_timeout=5, give_up_after=20)
        conn.register()
        first = conn.credential
        hb = coordinator_pb2.HeartbeatRequest(client_id="client-1")
        time.sleep(1.5)  # expired: UNAUTHENTICATED -> enrol again -> the call goes through
        conn.call(lambda: conn.coord.Heartbeat(hb, metadata=conn.md, timeout=5))
        assert conn.enrolments == 2 and conn.credential != first
        # the server forgets the client (restart, or dropped for a missed deadline): NOT_FOUND -> enrol again
        with srv.grid.lock:
            srv.grid.clients.clear()
        conn.call(lambda: conn.coord.Heartbeat(hb, metadata=conn.md, timeout=5))
        assert conn.enrolments == 3 and "client-1" in srv.grid.clients
        # a bad join token is fatal, not retried forever
        bad = Connection(srv.address, "client-2", "wrong", "m", "shop", call_timeout=5, give_up_after=20)
        with pytest.raises(grpc.RpcError) as e:
            bad.register()
        assert e.value.code() == UNAUTH


def test_a_second_process_under_the_same_name_wins_and_the_first_is_told() -> None:
    with grpc_server() as srv:
        a = Connection(srv.address, "client-1", TOKEN, "m", "arith", call_timeout=5, give_up_after=10)
        b = Connection(srv.address, "client-1", TOKEN, "m", "arith", call_timeout=5, give_up_after=10)
        a.register()
        b.register()  # another process (new instance id) under the same name
        hb = coordinator_pb2.HeartbeatRequest(client_id="client-1")
        with pytest.raises(SupersededError):
            a.call(lambda: a.coord.Heartbeat(hb, metadata=a.md, timeout=5))
        b.call(lambda: b.coord.Heartbeat(hb, metadata=b.md, timeout=5))
        assert srv.grid.clients["client-1"].instance == b.instance_id
