"""A learner's state on disk: safetensors for tensors, JSON for the rest (no pickle).

The server's checkpoint (the LLM's side) and a client's state folder (an SLM's side) write the
same files, so a learner resumes the same way on both sides. A folder is written under a temporary
name, synced and renamed: on disk it is whole or absent, never half-written.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .data import Sample
from .learner import LearnerState


class StateError(ValueError):
    """A state folder that cannot be read back, or belongs to another model."""


def optimizer_tensors(state_dict: dict) -> dict[str, torch.Tensor]:
    """AdamW's per-parameter moments and step counts, flat (its hyper-parameters come from the config)."""
    return {f"{i}/{k}": (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
            for i, st in state_dict["state"].items() for k, v in st.items()}


def optimizer_state(tensors: dict[str, torch.Tensor], param_groups: list) -> dict:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        i, _, name = key.partition("/")
        state.setdefault(int(i), {})[name] = v
    return {"state": state, "param_groups": param_groups}


def write_state_files(s: LearnerState, d: Path, prefix: str = "") -> None:
    """``<prefix>adapter.safetensors``, ``<prefix>optimizer.safetensors``, ``<prefix>kept.json`` and
    ``<prefix>rng.json`` into the (temporary) folder ``d``."""
    save_file(s.adapter, str(d / f"{prefix}adapter.safetensors"))
    save_file(optimizer_tensors(s.optimizer), str(d / f"{prefix}optimizer.safetensors"))
    (d / f"{prefix}kept.json").write_text(json.dumps([k.to_dict() for k in s.kept.values()]))
    version, internal, gauss = s.rng  # random.Random.getstate()
    (d / f"{prefix}rng.json").write_text(json.dumps(
        {"python": [version, list(internal), gauss], "torch": s.torch_rng.tolist()}))


def read_state_files(d: Path, base: LearnerState, prefix: str = "") -> LearnerState:
    """The state written by ``write_state_files``. Files an older checkpoint lacks (optimizer, kept
    paths, RNGs) come from ``base``, the learner's current state. The adapter must name exactly the
    learner's LoRA parameters with their shapes: another model's state is refused, not half-loaded."""
    try:
        adapter = load_file(str(d / f"{prefix}adapter.safetensors"))
        opt, kept, rng = d / f"{prefix}optimizer.safetensors", d / f"{prefix}kept.json", d / f"{prefix}rng.json"
        optimizer = (optimizer_state(load_file(str(opt)), base.optimizer["param_groups"])
                     if opt.exists() else base.optimizer)
        kept_paths = {k["id"]: Sample(**k) for k in json.loads(kept.read_text())} if kept.exists() else base.kept
        py_rng, torch_rng = base.rng, base.torch_rng
        if rng.exists():
            r = json.loads(rng.read_text())
            py_rng = (r["python"][0], tuple(r["python"][1]), r["python"][2])
            torch_rng = torch.tensor(r["torch"], dtype=torch.uint8)
    except (OSError, ValueError, KeyError, TypeError, IndexError, SafetensorError) as e:
        raise StateError(f"cannot read the learner state in {d}: {e}") from e
    want = {k: tuple(v.shape) for k, v in base.adapter.items()}
    got = {k: tuple(v.shape) for k, v in adapter.items()}
    if got != want:
        diff = sorted(set(want.items()) ^ set(got.items()))[:3]
        raise StateError(f"the adapter in {d} is not this model's LoRA adapter (first differences: {diff}); "
                         "point the learner at another folder or remove this one")
    return LearnerState(adapter, optimizer, kept_paths, py_rng, torch_rng)


def write_state_dir(s: LearnerState, final: Path, meta: dict) -> None:
    """A new folder ``final`` (state files plus ``meta.json``): written under a temporary name, synced,
    then renamed, so it appears whole or not at all."""
    tmp = final.parent / f".{final.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_state_files(s, tmp)
    (tmp / "meta.json").write_text(json.dumps(meta))
    sync_dir_files(tmp)
    os.replace(tmp, final)


def read_meta(d: Path) -> dict | None:
    try:
        return json.loads((d / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def sync_dir_files(d: Path) -> None:
    for f in d.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
