"""In-process transport: the same round code with clients as objects in this
process. Every hop still goes through protobuf bytes (``lada.common.wire``), so
byte counts, float32 rounding and serialisation match the gRPC path."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence

from lada.common import candidates as cands
from lada.common import chunks, wire
from lada.common.proto.lada.v1 import allocation_pb2, messages_pb2
from lada.common.rounds import AllocatedPair, ProbeResult, ReasoningPath, TrainResult


class InProcessGrid:
    def __init__(self, apps: dict) -> None:  # name -> a ClientApp (duck-typed: the server never imports it)
        self.apps = apps
        self.run_key = ""  # set by the Federation (see messages.proto Task.run_key)
        self.train_align = (0, True)  # set by the Federation (see messages.proto Task.align_items)
        self._bytes: dict[str, list[int]] = {n: [0, 0] for n in apps}
        # the candidate traffic as over gRPC: what each client holds, the round's batch, its delta
        self.held: dict[str, cands.Held] = {n: cands.Held() for n in apps}
        self._batch: tuple[str, list[ReasoningPath]] = ("", [])
        self._own: dict[str, dict[str, str]] = {}

    def wait_for_clients(self, n: int, timeout: float) -> list[str]:
        return sorted(self.apps)

    def client_info(self, name: str) -> tuple[str, str]:
        app = self.apps[name]
        return app.model_name, app.domain

    def _task(self, t: int, kind: int, evaluate: bool = False) -> messages_pb2.Task:
        return messages_pb2.Task(task_id=uuid.uuid4().hex, round=t, kind=kind, evaluate=evaluate,
                                 run_key=self.run_key)

    def probe(self, round_idx: int, candidates: Sequence[ReasoningPath], evaluate: Collection[str],
              clients: list[str]) -> dict[str, ProbeResult]:
        blob = cands.batch_bytes(candidates)
        bid = chunks.sha256(blob)  # in-process blobs are named by their sha256
        old, prev = self._batch
        delta = cands.make_delta(prev, old, candidates, bid, blob) if old and old != bid else None
        dblob = delta.SerializeToString() if delta is not None else b""
        self._batch = (bid, list(candidates))
        by_id = {p.sample_id: p for p in candidates}
        out = {}
        for name in clients:
            task = self._task(round_idx, messages_pb2.TASK_KIND_PROBE, name in evaluate)
            task.blob_id = bid
            if dblob and len(dblob) < len(blob):
                task.delta_blob_id, task.delta_base, task.delta_blob_size = chunks.sha256(dblob), old, len(dblob)
            info = wire.task_info(task)
            paths, down = self._fetch(self.held[name], task, blob, dblob)
            res = self.apps[name].probe(info, paths)
            self.held[name].hold_own(round_idx, res.own_paths)
            rep_b = wire.learnability_report(res, name, info).SerializeToString()
            own_b = cands.strip_known(res.own_paths, self.held[name].by_id()).SerializeToString()
            self._bytes[name][1] += down + task.ByteSize()
            self._bytes[name][0] += len(rep_b) + len(own_b)
            out[name] = wire.probe_result(allocation_pb2.LearnabilityReport.FromString(rep_b), cands.fill_known(
                messages_pb2.PathBatch.FromString(own_b), by_id))
        self._own = {n: {p.sample_id: p.text for p in pr.own_paths} for n, pr in out.items()}
        return out

    @staticmethod
    def _fetch(held: cands.Held, task: messages_pb2.Task, blob: bytes, dblob: bytes
               ) -> tuple[list[ReasoningPath], int]:
        """What a gRPC client downloads (``client.held.fetch``): nothing, the delta, or the full batch;
        returns the paths and the bytes that took."""
        if held.blob_id == task.blob_id:
            held.hold(held.blob_id, held.paths)
            return held.paths, 0
        if task.delta_blob_id and held.blob_id == task.delta_base:
            paths = cands.delta_to(held.paths, held.blob_id, dblob, task.blob_id)  # a bug here must fail loudly
            held.hold(task.blob_id, paths)
            return paths, len(dblob)
        paths = wire.paths_of(messages_pb2.PathBatch.FromString(blob))
        held.hold(task.blob_id, paths)
        return paths, len(blob)

    def train(self, round_idx: int, allocations: dict[str, list[AllocatedPair]]) -> dict[str, TrainResult]:
        out = {}
        for name, pairs in allocations.items():
            task = self._task(round_idx, messages_pb2.TASK_KIND_TRAIN)
            task.align_items, task.align_center = self.train_align
            info = wire.task_info(task)
            held = self.held[name]
            req = held.request(name, round_idx)
            bid, batch = self._batch
            msgs = [m.SerializeToString() for m in cands.compact_all(
                pairs, req, bid, {p.sample_id: p for p in batch}, self._own.get(name))]
            self._bytes[name][0] += len(req.SerializeToString())
            self._bytes[name][1] += sum(map(len, msgs)) + task.ByteSize()
            res = self.apps[name].train(info, cands.resolve_all(
                [allocation_pb2.AllocatedSample.FromString(b) for b in msgs], held))
            res_b = wire.reward_report(res, name, info).SerializeToString()
            self._bytes[name][0] += len(res_b)
            out[name] = wire.train_result(allocation_pb2.RewardReport.FromString(res_b))
        return out

    def take_bytes(self) -> dict[str, tuple[int, int]]:
        out = {n: (v[0], v[1]) for n, v in self._bytes.items()}
        self._bytes = {n: [0, 0] for n in self.apps}
        return out

    def stop(self) -> None:
        pass
