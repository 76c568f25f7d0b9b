#!/usr/bin/env python3
"""Container health checks for LaDa (exit 0 = healthy, 1 = not).

    healthcheck.py grpc [ADDRESS] [--tls-ca CA --tls-cert CERT --tls-key KEY --tls-name NAME]
    healthcheck.py http [URL]

``grpc``: the standard ``grpc.health.v1.Health/Check`` of ``lada server``
(service "" = the whole server). ADDRESS defaults to the port of
``$LADA_SERVER__ADDRESS`` on 127.0.0.1. With TLS, pass the CA (and, for
mutual TLS, a client certificate); ``--tls-name`` is the name in the server
certificate when it differs from ADDRESS's host (a check from inside the
server's own container dials 127.0.0.1). Without ``--tls-ca`` it also reads
``$LADA_HEALTH_TLS_CA``, ``$LADA_HEALTH_TLS_CERT``, ``$LADA_HEALTH_TLS_KEY``
and ``$LADA_HEALTH_TLS_NAME``.

``http``: GET URL (default ``http://127.0.0.1:8765/healthz``, the dashboard)
must answer 200.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.request


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as fh:
        return fh.read()


def default_address() -> str:
    addr = os.environ.get("LADA_SERVER__ADDRESS", "127.0.0.1:50051")
    return f"127.0.0.1:{addr.rsplit(':', 1)[-1]}"


def check_grpc(address: str, ca: str | None, cert: str | None, key: str | None, name: str | None,
               timeout: float) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if ca:
        creds = grpc.ssl_channel_credentials(_read(ca), _read(key), _read(cert))
        opts = [("grpc.ssl_target_name_override", name)] if name else []
        channel = grpc.secure_channel(address, creds, opts)
    else:
        channel = grpc.insecure_channel(address)
    try:
        resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        return resp.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError as e:
        print(f"unhealthy: {e.code().name}: {e.details()}", file=sys.stderr)
        return False
    finally:
        channel.close()


def check_http(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - a fixed local URL
            return resp.status == 200
    except Exception as e:  # noqa: BLE001 - any failure is unhealthy
        print(f"unhealthy: {e}", file=sys.stderr)
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=["grpc", "http"])
    p.add_argument("target", nargs="?", help="gRPC address or URL")
    p.add_argument("--timeout", type=float, default=5.0)
    env = os.environ.get
    p.add_argument("--tls-ca", default=env("LADA_HEALTH_TLS_CA"))
    p.add_argument("--tls-cert", default=env("LADA_HEALTH_TLS_CERT"))
    p.add_argument("--tls-key", default=env("LADA_HEALTH_TLS_KEY"))
    p.add_argument("--tls-name", default=env("LADA_HEALTH_TLS_NAME"))
    a = p.parse_args(argv)
    if a.kind == "grpc":
        ok = check_grpc(a.target or default_address(), a.tls_ca, a.tls_cert, a.tls_key, a.tls_name, a.timeout)
    else:
        ok = check_http(a.target or "http://127.0.0.1:8765/healthz", a.timeout)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
