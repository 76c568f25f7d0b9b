"""The server's checkpoint of a committed round: the LLM's and the allocation service's state.

``checkpoints/run-<id>/round-<t>/`` holds the LLM's LoRA adapter, its optimizer and
every filter's state as safetensors, and the SLM paths the LLM keeps, its RNGs and
what each receiver was given so far as JSON. It is written under a temporary name
and renamed, so a checkpoint on disk is always whole; the two newest are kept. A
temporary folder that a killed server left behind is removed by the next write or
restore of the run (only one server writes a data dir: ``server/lock.py``).
The objects that own the state say what it is (``state_dict``/``load_state_dict``);
this module only decides where it goes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from lada.common.state import read_state_files, sync_dir_files, write_state_files
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .allocation import AllocationService
from .llm_host import LLMHost

#: what a failed checkpoint write raises: the file system's errors, and safetensors' own for the
#: same causes (a full disk during ``save_file`` is a ``SafetensorError``, not an ``OSError``)
CHECKPOINT_ERRORS: tuple[type[Exception], ...] = (OSError, SafetensorError)


class Checkpoints:
    """The checkpoints of one run; ``identity`` (run id, name, creation time) tells this run's
    checkpoints from another database's run with the same id."""

    def __init__(self, root: Path, identity: dict[str, Any]) -> None:
        self.root, self.identity = root, identity

    def write(self, t: int, llm: LLMHost, alloc: AllocationService) -> None:
        """Checkpoint round ``t``; raises one of ``CHECKPOINT_ERRORS`` with nothing half-written left."""
        final, tmp = self.root / f"round-{t}", self.root / f".round-{t}.{os.getpid()}.tmp"
        self.remove_stale()
        try:
            tmp.mkdir(parents=True)
            write_state_files(llm.state_dict(), tmp, prefix="llm_")
            state = alloc.state_dict()
            (tmp / "given.json").write_text(json.dumps(state["given"]))
            save_file(state["tensors"], str(tmp / "filters.safetensors"))
            (tmp / "meta.json").write_text(json.dumps({**self.identity, "round": t, "dims": state["dims"]}))
            sync_dir_files(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # frees what a full disk needs for the next try
            raise
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in self.root.glob("round-*"):
            if old.name[6:].isdigit() and int(old.name[6:]) < t - 1:
                shutil.rmtree(old, ignore_errors=True)

    def restore(self, committed: int, llm: LLMHost, alloc: AllocationService) -> int:
        """Load the newest checkpoint of this run at or before round ``committed``; its round, or 0."""
        self.remove_stale()
        for t in range(committed, 0, -1):
            d = self.root / f"round-{t}"
            try:
                meta = json.loads((d / "meta.json").read_text())
            except (OSError, ValueError):
                continue
            if any(meta.get(k) != v for k, v in self.identity.items()):
                continue  # another database's run with the same id
            # files an older checkpoint lacks keep the fresh learner's (Adam restarts, nothing kept)
            llm.load_state_dict(read_state_files(d, llm.state_dict(), prefix="llm_"))
            given = d / "given.json"  # absent in older checkpoints
            alloc.load_state_dict({"tensors": load_file(str(d / "filters.safetensors")), "dims": meta["dims"],
                                   "given": json.loads(given.read_text()) if given.exists() else {}})
            return t
        return 0

    def remove_stale(self) -> None:
        """Remove the temporary folders of writes that never finished (a server killed mid-write):
        this process writes one checkpoint at a time, so none is in progress now."""
        for old in self.root.glob(".round-*.tmp"):
            shutil.rmtree(old, ignore_errors=True)
