"""A credential's signature is checked once per process, not on every RPC (issue 17: each call
verified it twice), while its expiry is still checked on every call and a forged variant of a cached
credential is still refused."""

from __future__ import annotations

import pytest
from lada.server import auth
from lada.server.auth import AuthError, Credentials


def test_signature_checked_once_expiry_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    c = Credentials(b"s" * 32, "token", ttl_s=60)
    cred, _, _ = c.issue("client-1", now=1000.0)
    calls = []
    real = c._sig
    monkeypatch.setattr(c, "_sig", lambda payload: calls.append(payload) or real(payload))
    for _ in range(5):
        assert c.verify(cred, now=1000.0).client_id == "client-1"
    assert len(calls) == 1
    with pytest.raises(AuthError, match="expired"):
        c.verify(cred, now=1061.0)
    cid, n, e, sig = cred.rsplit(".", 3)
    with pytest.raises(AuthError, match="signature"):
        c.verify(f"client-2.{n}.{e}.{sig}", now=1000.0)


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "MAX_CACHED", 8)
    c = Credentials(b"s" * 32, "token", ttl_s=60)
    for i in range(50):
        c.verify(c.issue(f"client-{i}", now=1000.0)[0], now=1000.0)
    assert len(c._verified) <= 8
