"""Is a listen address free? Asked before a run starts, so a taken port is a usage error
instead of a bind failure after the models have loaded (or one that goes unseen in a child)."""

from __future__ import annotations

import socket


class PortTaken(ValueError):
    """The address cannot be bound here; the message names the knob and the address."""


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); raises ValueError on another form."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def check_free(knob: str, host: str, port: int) -> None:
    """Raise PortTaken when nothing could listen on ``host:port`` now (port 0 always can).

    SO_REUSEADDR as the real servers (gRPC, uvicorn) set it: a port with only TIME_WAIT
    connections left counts as free, one that something listens on does not."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise PortTaken(f"{knob}: cannot resolve host {host!r} ({e.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise PortTaken(f"{knob}: {host}:{port} is not free ({e.strerror}); stop what listens there "
                            "or choose another port") from None
