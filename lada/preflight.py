"""What a command checks before it does any work: the models it will load resolve, the ports it
will listen on are free. A failure is a usage error (exit 2) naming the flag and the value, not a
traceback minutes later after models loaded and a run row was written."""

from __future__ import annotations

import argparse

from lada.common import model_refs
from lada.common.config import LadaConfig
from lada.common.ports import check_free, split_address

# command -> what it loads and where it listens (see lada.cli.build_parser)
LOADS_ALL = {"demo", "build", "experiment"}
LISTENS_GRPC = {"demo", "server"}


def _command(args: argparse.Namespace) -> str:
    return args.models_cmd if getattr(args, "cmd", None) == "models" else args.cmd


def model_knobs(cfg: LadaConfig, args: argparse.Namespace) -> dict[str, str]:
    """``{knob: model name}`` of every model this command will load."""
    cmd = _command(args)
    llm = {"models.llm": cfg.models.llm}
    clients = {f"models.clients[{k}]": v for k, v in cfg.models.clients.items()}
    if cmd in LOADS_ALL:
        return llm | clients
    if cmd == "server":
        return llm
    if cmd == "client" and args.name in cfg.models.clients:
        return {f"models.clients[{args.name}]": cfg.models.clients[args.name]}
    return {}


def check(cfg: LadaConfig, args: argparse.Namespace) -> None:
    """Raise ValueError (ModelRefError, PortTaken) on the first model or port that would fail."""
    for knob, name in model_knobs(cfg, args).items():
        model_refs.check(knob, name)
    cmd = _command(args)
    if cmd in LISTENS_GRPC:
        try:
            host, port = split_address(cfg.server.address)
        except ValueError as e:
            raise ValueError(f"server.address: {e}") from None
        if cmd == "demo" and port == 0:  # the clients dial the address as written
            raise ValueError("server.address: the demo's clients need a fixed port, not 0")
        check_free("server.address", host, port)
    if cmd == "dashboard" or (cmd == "demo" and not args.no_dashboard):
        check_free("dashboard.port", cfg.dashboard.host, cfg.dashboard.port)
