"""The candidate batch a gRPC client holds between rounds, and fetching the next one (issue 17).

A PROBE names the full candidate blob and, when the server has one, a delta against the batch of
the round before. Holding that base, the client downloads only the delta; holding the very batch
(the LLM did not change), nothing. Anything else -- a new, rejoined or restarted client, a delta
that does not apply, a result whose sha256 is not the full blob's id -- downloads the full blob, so
the paths probed are always exactly the server's. With a state folder the batch is kept there too
(``candidates.pb``, the full blob's bytes: protobuf, checked against its sha256 when read back), so a
restarted client still holds it. Blob ids depend on the server's chunking, so the id the task named
is kept beside the bytes (``candidates.json``, with the bytes' plain sha256).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import grpc
from lada.common import candidates as cands
from lada.common import chunks, wire
from lada.common.proto.lada.v1 import messages_pb2

log = logging.getLogger("lada.client")
FILE, META = "candidates.pb", "candidates.json"


def load(state_dir: Path | None) -> cands.Held:
    """What the state folder holds (nothing if there is none, or it does not read back whole)."""
    held = cands.Held()
    p = state_dir / FILE if state_dir else None
    if p is None or not p.exists():
        return held
    try:
        data, meta = p.read_bytes(), json.loads((p.parent / META).read_text())
        if chunks.sha256(data) != meta["sha256"] or not chunks.is_hex_id(meta["blob_id"]):
            raise ValueError("its bytes are not those it was saved with")
        held.hold(meta["blob_id"], wire.paths_of(messages_pb2.PathBatch.FromString(data)))
    except Exception as e:  # noqa: BLE001 - a damaged cache only costs one full download
        log.warning("ignoring %s (%s): the next probe downloads the full candidate batch", p, e)
        return cands.Held()
    return held


def save(state_dir: Path | None, blob_id: str, data: bytes) -> None:
    """Keep the full batch (``blob_id``: the id the task named) in the state folder; each file is
    written whole or not at all, and a pair that does not match is ignored by :func:`load`."""
    if not state_dir:
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    meta = json.dumps({"blob_id": blob_id, "sha256": chunks.sha256(data)}).encode()
    for name, content in ((FILE, data), (META, meta)):
        tmp = state_dir / f".{name}.{os.getpid()}.tmp"
        tmp.write_bytes(content)
        os.replace(tmp, state_dir / name)


def fetch(conn: Any, task: messages_pb2.Task, held: cands.Held, state_dir: Path | None = None
          ) -> list[cands.ReasoningPath]:
    """The task's candidate paths, downloading as little as the client's holdings allow; ``held``
    then holds them. ``conn``: a :class:`lada.client.runtime.Connection` (its ``download``)."""
    if held.blob_id and held.blob_id == task.blob_id:
        held.hold(held.blob_id, held.paths)  # the same batch: nothing to download (own paths are new)
        return held.paths
    if task.delta_blob_id and task.delta_base and held.blob_id == task.delta_base:
        try:
            paths = cands.delta_to(held.paths, held.blob_id, conn.download(task.delta_blob_id), task.blob_id)
        except cands.DeltaError as e:
            log.warning("%s: candidate delta does not apply (%s); downloading the full batch", conn.name, e)
        except grpc.RpcError as e:  # the delta is gone (a newer round's replaced it): the full batch may not be
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise
            log.warning("%s: candidate delta not found; downloading the full batch", conn.name)
        else:
            held.hold(task.blob_id, paths)
            save(state_dir, task.blob_id, cands.batch_bytes(paths))
            return paths
    data = bytes(conn.download(task.blob_id))
    paths = wire.paths_of(messages_pb2.PathBatch.FromString(data))
    held.hold(task.blob_id, paths)
    save(state_dir, task.blob_id, data)
    return paths
