"""A client's state folder belongs to one client name and one model.

Without this, ``--name client-1 --client.state_dir <client-3's folder>`` would resume client-3's
adapter, optimizer and kept paths under client-1's name (same model: the shapes match, so the
adapter check in :mod:`lada.common.state` cannot tell). The folder is claimed on first use with an
``owner.json`` and every later process checks it -- and the ``client``/``model`` of the saved states
already there, for folders written before the claim existed -- before anything is loaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lada.common.state import StateError, read_meta

OWNER = "owner.json"


def claim_state_dir(state_dir: Path, client: str, model: str) -> None:
    """Refuse ``state_dir`` if it holds another client's or another model's state; else claim it."""
    owner = _read_owner(state_dir)
    found = [owner] if owner else []
    found += [m for m in map(read_meta, sorted(state_dir.glob("run-*/state-*"))) if m]
    want = {"client": client, "model": model}
    for meta in found:
        other = {k: meta[k] for k in want if k in meta and meta[k] != want[k]}
        if other:
            raise StateError(
                f"state folder {state_dir} belongs to "
                + ", ".join(f"{k} {v!r}" for k, v in other.items())
                + f", not client {client!r} with model {model!r}: give this client its own "
                "--client.state_dir (or remove that folder to start this client from its base model)")
    if owner is None:
        state_dir.mkdir(parents=True, exist_ok=True)
        tmp = state_dir / f".{OWNER}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"client": client, "model": model}))
        os.replace(tmp, state_dir / OWNER)


def _read_owner(state_dir: Path) -> dict | None:
    p = state_dir / OWNER
    if not p.exists():
        return None
    try:
        owner = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise StateError(f"cannot read {p}: {e}; remove it if this folder is this client's") from e
    if not isinstance(owner, dict):
        raise StateError(f"{p} is not an owner record; remove it if this folder is this client's")
    return owner
