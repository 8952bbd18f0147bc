# SPDX-License-Identifier: Apache-2.0
"""The latest-frame-wins worker: bounded queue, drop counting, one state snapshot per frame."""

import threading
import time

import pytest

from edgemoe_ros.ros.worker import FrameWorker


def _wait(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_processes_in_order_when_not_overloaded():
    seen = []
    w = FrameWorker(lambda item, state: seen.append((item, state)), lambda: "s", queue_size=4)
    w.start()
    try:
        for i in range(3):
            w.submit(i)
        assert w.wait_idle(5.0)
        assert seen == [(0, "s"), (1, "s"), (2, "s")]
        assert w.counters()["dropped"] == 0 and w.counters()["processed"] == 3
    finally:
        w.stop()


def test_latest_frame_wins_and_drops_are_counted():
    gate = threading.Event()
    seen = []

    def process(item, state):
        gate.wait(5.0)
        seen.append(item)

    w = FrameWorker(process, lambda: None, queue_size=1)
    w.start()
    try:
        w.submit(0)
        _wait(lambda: w.pending() == 0)  # 0 is being processed (blocked on the gate)
        assert w.submit(1) is True
        assert w.submit(2) is False  # 1 dropped for 2
        assert w.submit(3) is False  # 2 dropped for 3
        gate.set()
        assert w.wait_idle(5.0)
        assert seen == [0, 3]
        c = w.counters()
        assert (c["submitted"], c["dropped"], c["processed"]) == (4, 2, 2)
    finally:
        w.stop()


def test_state_is_snapshotted_once_per_frame_just_before_processing():
    calls = []
    state = {"v": 0}

    def state_fn():
        calls.append(state["v"])
        return state["v"]

    def process(item, snap):
        state["v"] += 1  # a "switch" during processing must not change this frame's snapshot
        assert snap == item

    w = FrameWorker(process, state_fn, queue_size=10)
    w.start()
    try:
        for i in range(5):
            w.submit(i)
        assert w.wait_idle(5.0)
        assert calls == [0, 1, 2, 3, 4] and w.counters()["failed"] == 0
    finally:
        w.stop()


def test_exception_in_process_is_counted_and_worker_survives():
    def process(item, state):
        if item == "bad":
            raise RuntimeError("boom")

    w = FrameWorker(process, lambda: None, queue_size=4)
    w.start()
    try:
        w.submit("bad")
        w.submit("good")
        assert w.wait_idle(5.0)
        assert w.counters()["failed"] == 1 and w.counters()["processed"] == 1
    finally:
        w.stop()


def test_stop_discards_queue_and_can_restart():
    gate = threading.Event()
    w = FrameWorker(lambda item, state: gate.wait(5.0), lambda: None, queue_size=5)
    w.start()
    w.submit(0)
    _wait(lambda: w.pending() == 0)
    w.submit(1)
    w.submit(2)
    gate.set()
    assert w.stop() is True
    c = w.counters()
    assert not w.running and c["pending"] == 0
    assert c["processed"] + c["dropped"] == 3  # nothing lost without being counted
    w.start()
    w.submit(9)
    assert w.wait_idle(5.0)
    w.stop()


def test_rejects_bad_queue_size():
    with pytest.raises(ValueError, match="queue_size"):
        FrameWorker(lambda i, s: None, lambda: None, queue_size=0)


def test_restart_after_a_stop_timeout_never_runs_two_workers():
    """A worker stuck in a frame past stop()'s timeout keeps its thread; start() must not spawn a
    second one beside it (two workers would process and publish concurrently, out of order)."""
    gate = threading.Event()
    seen = []

    def process(item, state):
        if item == "stuck":
            gate.wait(5.0)
        seen.append((item, threading.get_ident()))

    name = "edgemoe-worker-stuck-test"
    w = FrameWorker(process, lambda: None, queue_size=4, name=name)
    w.start()
    try:
        w.submit("stuck")
        _wait(lambda: w.pending() == 0)
        assert w.stop(timeout=0.05) is False  # the frame in progress outlives the join
        w.start()
        w.submit("a")
        w.submit("b")
        assert sum(t.name == name for t in threading.enumerate()) == 1
        gate.set()
        assert w.wait_idle(5.0)
        assert [item for item, _ in seen] == ["stuck", "a", "b"]
        assert len({ident for _, ident in seen}) == 1, "frames were processed by two threads"
    finally:
        gate.set()
        assert w.stop() is True
    _wait(lambda: w.threads_alive == 0)
