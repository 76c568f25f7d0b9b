"""The end of a run: the server stays up until its clients have been told STOP (transport.linger).

A client still busy with a round when the run ends (dropped from it, say) used to find the server
gone after a fixed 3 s and retry for ``client.give_up_after`` (600 s). Now the server waits, at most
``transport.linger``, until every live client has pulled its STOP and left.
"""

from __future__ import annotations

import threading
import time

from lada.client.runtime import Connection, run_client
from lada.common.proto.lada.v1 import coordinator_pb2
from lada.common.rounds import AllocatedPair, TrainResult

from tests.support.transport import TOKEN, grpc_server, in_thread


class _SlowLearner:
    """A client app whose TRAIN outlasts the round's deadline."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.trained = threading.Event()

    def train(self, task: object, samples: list) -> TrainResult:
        time.sleep(self.seconds)
        self.trained.set()
        return TrainResult(test_accuracy=0.5)


def test_the_server_waits_for_a_busy_client_to_pull_stop() -> None:
    with grpc_server(timeout=1.0, heartbeat_s=0.2, liveness_s=5.0) as srv:
        app = _SlowLearner(3.0)
        conn = Connection(srv.address, "client-1", TOKEN, "m", "arith", call_timeout=5, give_up_after=30)
        client, box = in_thread(run_client, conn, app, 0.5)
        assert srv.grid.wait_for_clients(1, 10) == ["client-1"]
        # the last round: client-1 misses its deadline while still learning, and is dropped
        assert srv.grid.train(1, {"client-1": [AllocatedPair("s1", "q1?", "p #### 1")]}) == {}
        assert not app.trained.is_set()
        srv.grid.stop()  # the run is over
        t0 = time.time()
        still = srv.grid.wait_until_clients_leave(20.0)
        waited = time.time() - t0
        client.join(10)
        assert still == [] and app.trained.is_set(), f"{still} still here after {waited:.1f}s"
        assert not client.is_alive() and box.get("error") is None, box  # told STOP, left cleanly
        assert 0.5 < waited < 15.0  # it waited for the busy client, then returned at once


def test_linger_is_a_bound() -> None:
    """A client that never pulls (busy for longer than the linger) does not keep the server up."""
    with grpc_server(heartbeat_s=0.2, liveness_s=30.0) as srv:
        conn = Connection(srv.address, "client-1", TOKEN, "m", "arith", call_timeout=5, give_up_after=5)
        conn.register()
        beat = threading.Event()
        threading.Thread(target=lambda: [conn.coord.Heartbeat(coordinator_pb2.HeartbeatRequest(client_id=conn.name),
                                                               metadata=conn.md, timeout=5)
                                         for _ in iter(lambda: beat.wait(0.2), True)], daemon=True).start()
        srv.grid.stop()
        t0 = time.time()
        assert srv.grid.wait_until_clients_leave(1.5) == ["client-1"]
        assert time.time() - t0 < 3.0
        beat.set()
