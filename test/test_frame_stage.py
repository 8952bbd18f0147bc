# SPDX-License-Identifier: Apache-2.0
"""stage.Stage, the multi-camera node's pipeline stage: items handled in order on the stage's
thread, a failing item reported without ending the stage, a full queue holding the producer back,
and stop finishing what was already put."""

from __future__ import annotations

import threading

import pytest

from edgemoe_ros.ros.stage import Stage

WAIT_S = 10.0


def test_items_handled_in_the_order_put_on_the_stage_thread():
    seen: list[tuple[int, str]] = []
    stage = Stage("t-order", lambda i: seen.append((i, threading.current_thread().name)),
                  lambda exc: None, depth=3)
    for i in range(50):
        stage.put(i)
    assert stage.stop(WAIT_S)
    assert [i for i, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"t-order"}


def test_a_failing_item_is_reported_and_the_next_ones_still_run():
    handled: list[int] = []
    errors: list[Exception] = []

    def handle(i: int) -> None:
        if i == 2:
            raise RuntimeError("bad frame")
        handled.append(i)

    stage = Stage("t-error", handle, errors.append, depth=1)
    for i in range(5):
        stage.put(i)
    assert stage.stop(WAIT_S)
    assert handled == [0, 1, 3, 4]
    assert [str(e) for e in errors] == ["bad frame"]


def test_a_full_stage_holds_the_producer_back_until_it_catches_up():
    release = threading.Event()
    started = threading.Event()

    def handle(_i: int) -> None:
        started.set()
        release.wait(WAIT_S)

    stage = Stage("t-depth", handle, lambda exc: None, depth=1)
    stage.put(0)  # taken by the stage, which now blocks in handle
    assert started.wait(WAIT_S)
    stage.put(1)  # fills the one-item queue
    producer = threading.Thread(target=stage.put, args=(2,))
    producer.start()
    producer.join(0.3)
    assert producer.is_alive()  # the third put waits for the stage
    release.set()
    producer.join(WAIT_S)
    assert not producer.is_alive()
    assert stage.stop(WAIT_S)


def test_stop_finishes_the_items_already_put():
    handled: list[int] = []
    gate = threading.Event()

    def handle(i: int) -> None:
        gate.wait(WAIT_S)
        handled.append(i)

    stage = Stage("t-stop", handle, lambda exc: None, depth=4)
    for i in range(4):
        stage.put(i)
    gate.set()
    assert stage.stop(WAIT_S)
    assert handled == [0, 1, 2, 3]


def test_depth_below_one_is_refused():
    with pytest.raises(ValueError, match="depth"):
        Stage("t-bad", lambda i: None, lambda exc: None, depth=0)


def test_drain_returns_once_the_items_put_before_it_are_handled():
    """What a model swap waits for before closing the old engine (multi_camera_node)."""
    release = threading.Event()
    done: list[int] = []

    def handle(i: int) -> None:
        release.wait(5)
        done.append(i)

    stage: Stage[int] = Stage("test-drain", handle, lambda exc: None, 4)
    for i in range(3):
        stage.put(i)
    assert not stage.drain(0.2)  # the first item is still blocked
    threading.Timer(0.1, release.set).start()
    assert stage.drain(5)
    assert done == [0, 1, 2]
    assert stage.stop(5)
