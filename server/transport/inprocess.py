"""In-process transport: the same round code with clients as objects in this
process. Every hop still goes through protobuf bytes (``lada.common.wire``), so
byte counts, float32 rounding and serialisation match the gRPC path."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence

from lada.common import wire
from lada.common.proto.lada.v1 import allocation_pb2, messages_pb2
from lada.common.rounds import AllocatedPair, ProbeResult, ReasoningPath, TrainResult


class InProcessGrid:
    def __init__(self, apps: dict) -> None:  # name -> a ClientApp (duck-typed: the server never imports it)
        self.apps = apps
        self.run_key = ""  # set by the Federation (see messages.proto Task.run_key)
        self._bytes: dict[str, list[int]] = {n: [0, 0] for n in apps}

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
        blob = wire.path_batch(candidates).SerializeToString()
        out = {}
        for name in clients:
            task = self._task(round_idx, messages_pb2.TASK_KIND_PROBE, name in evaluate)
            info = wire.task_info(task)
            res = self.apps[name].probe(info, wire.paths_of(messages_pb2.PathBatch.FromString(blob)))
            rep_b = wire.learnability_report(res, name, info).SerializeToString()
            own_b = wire.path_batch(res.own_paths).SerializeToString()
            self._bytes[name][1] += len(blob) + task.ByteSize()
            self._bytes[name][0] += len(rep_b) + len(own_b)
            out[name] = wire.probe_result(allocation_pb2.LearnabilityReport.FromString(rep_b),
                                          messages_pb2.PathBatch.FromString(own_b))
        return out

    def train(self, round_idx: int, allocations: dict[str, list[AllocatedPair]]) -> dict[str, TrainResult]:
        out = {}
        for name, pairs in allocations.items():
            task = self._task(round_idx, messages_pb2.TASK_KIND_TRAIN)
            info = wire.task_info(task)
            msgs = [wire.allocated_sample(p).SerializeToString() for p in pairs]
            self._bytes[name][1] += sum(map(len, msgs)) + task.ByteSize()
            res = self.apps[name].train(info, [wire.allocated_pair(allocation_pb2.AllocatedSample.FromString(b))
                                               for b in msgs])
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
