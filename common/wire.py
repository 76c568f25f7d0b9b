"""Protobuf <-> round dataclasses: the one place that knows the wire form of a round.

Used by the gRPC grid and servicers, the in-process grid (which still
serialises, so byte counts and float32 rounding match gRPC) and the client
runtime. Float fields are float32 on the wire: a value read back from a
message is what the other side receives.
"""

from __future__ import annotations

from collections.abc import Iterable

from .proto.lada.v1 import allocation_pb2, messages_pb2
from .rounds import AllocatedPair, ProbeResult, ReasoningPath, SampleReward, SampleStats, TaskInfo, TrainResult


def task_info(task: messages_pb2.Task) -> TaskInfo:
    return TaskInfo(task_id=task.task_id, round=task.round, evaluate=task.evaluate, run_key=task.run_key,
                    align_items=task.align_items, align_center=task.align_center)


# ---------------------------------------------------------------------- paths
def path_batch(paths: Iterable[ReasoningPath]) -> messages_pb2.PathBatch:
    return messages_pb2.PathBatch(paths=[
        messages_pb2.ReasoningPath(sample_id=p.sample_id, question=p.question, text=p.text, correct=p.correct,
                                   answer=p.answer) for p in paths])


def paths_of(batch: messages_pb2.PathBatch) -> list[ReasoningPath]:
    return [ReasoningPath(p.sample_id, p.question, p.text, p.answer, p.correct) for p in batch.paths]


# ---------------------------------------------------------------------- probe
def learnability_report(result: ProbeResult, client_id: str, task: TaskInfo,
                        own_paths_blob: str = "") -> allocation_pb2.LearnabilityReport:
    """The report of a PROBE; the own paths travel separately (a blob, see ``path_batch``)."""
    rep = allocation_pb2.LearnabilityReport(
        client_id=client_id, task_id=task.task_id, round=task.round, own_paths_blob=own_paths_blob,
        public_accuracy=result.public_accuracy, bytes_down=result.bytes_down,
        stats=[messages_pb2.SampleStats(sample_id=s.sample_id, nll=s.nll, sender_len=s.sender_len,
                                        own_len=s.own_len, own_correct=s.own_correct,
                                        sender_correct=s.sender_correct, answer_ce=s.answer_ce)
               for s in result.stats])
    if result.test_accuracy is not None:
        rep.has_test_accuracy = True
        rep.test_accuracy = result.test_accuracy
    return rep


def probe_result(rep: allocation_pb2.LearnabilityReport, own: messages_pb2.PathBatch) -> ProbeResult:
    return ProbeResult(
        stats=[SampleStats(s.sample_id, s.nll, s.sender_len, s.own_len, s.own_correct, s.sender_correct,
                           s.answer_ce) for s in rep.stats],
        own_paths=paths_of(own),
        public_accuracy=rep.public_accuracy,
        test_accuracy=rep.test_accuracy if rep.has_test_accuracy else None,
        bytes_down=rep.bytes_down,
    )


# ---------------------------------------------------------------------- train
def allocated_sample(p: AllocatedPair) -> allocation_pb2.AllocatedSample:
    return allocation_pb2.AllocatedSample(sample_id=p.sample_id, question=p.question, positive=p.positive,
                                          negative=p.negative, score=p.score, rank=p.rank)


def allocated_pair(s: allocation_pb2.AllocatedSample) -> AllocatedPair:
    return AllocatedPair(s.sample_id, s.question, s.positive, s.negative, s.score, s.rank)


def reward_report(result: TrainResult, client_id: str, task: TaskInfo) -> allocation_pb2.RewardReport:
    return allocation_pb2.RewardReport(
        client_id=client_id, task_id=task.task_id, round=task.round, steps=result.steps,
        loss_sft=result.loss_sft, loss_cd=result.loss_cd, test_accuracy=result.test_accuracy,
        train_seconds=result.train_seconds,
        samples=[allocation_pb2.SampleReward(sample_id=s.sample_id, nll_before=s.nll_before, nll_after=s.nll_after,
                                             alignment=s.alignment)
                 for s in result.samples])


def train_result(rep: allocation_pb2.RewardReport) -> TrainResult:
    return TrainResult(
        samples=[SampleReward(s.sample_id, s.nll_before, s.nll_after, s.alignment) for s in rep.samples],
        test_accuracy=rep.test_accuracy, steps=rep.steps, train_seconds=rep.train_seconds,
        loss_sft=rep.loss_sft, loss_cd=rep.loss_cd)
