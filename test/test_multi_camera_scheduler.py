# SPDX-License-Identifier: Apache-2.0
"""LatestFrameScheduler: latest frame per camera, round-robin rounds, no camera starves."""

from __future__ import annotations

import threading

import pytest

from edgemoe_ros.ros.camera_scheduler import LatestFrameScheduler, group_by


def test_latest_frame_wins_and_replacements_count_as_drops():
    s = LatestFrameScheduler(["a", "b"], max_batch=4)
    assert s.offer("a", 1) and not s.offer("a", 2) and s.offer("b", 10)
    assert s.take_round(0) == [("a", 2), ("b", 10)]
    assert s.replaced == {"a": 1, "b": 0} and s.offered == {"a": 2, "b": 1}
    assert s.take_round(0) == []


def test_fast_camera_cannot_starve_a_slow_one_with_batches_of_one():
    """A 30:1 faster camera re-offers before every round; with one camera per round (the smallest
    batch) the slow camera is still served at the next round after each of its frames."""
    s = LatestFrameScheduler(["fast", "slow"], max_batch=1)
    served = {"fast": [], "slow": []}
    for tick in range(300):
        s.offer("fast", tick)
        if tick % 30 == 0:
            s.offer("slow", tick)
        for cam, frame in s.take_round(0):
            served[cam].append(frame)
    assert served["slow"] == list(range(0, 300, 30))  # every slow frame served, none replaced
    assert s.replaced["slow"] == 0
    assert len(served["fast"]) >= 280  # the fast camera loses only the rounds the slow one took


def test_rounds_rotate_over_cameras():
    s = LatestFrameScheduler(["a", "b", "c"], max_batch=2)
    for cam in "abc":
        s.offer(cam, cam)
    assert [c for c, _ in s.take_round(0)] == ["a", "b"]
    for cam in "ab":
        s.offer(cam, cam)
    assert [c for c, _ in s.take_round(0)] == ["c", "a"]  # c waited one round, not forever
    assert [c for c, _ in s.take_round(0)] == ["b"]


def test_take_round_waits_for_a_frame_and_close_wakes_it():
    s = LatestFrameScheduler(["a"], max_batch=1)
    got = []
    t = threading.Thread(target=lambda: got.append(s.take_round(5.0)))
    t.start()
    s.offer("a", 7)
    t.join(5)
    assert got == [[("a", 7)]]
    t = threading.Thread(target=lambda: got.append(s.take_round(30.0)))
    t.start()
    s.close()
    t.join(5)
    assert not t.is_alive() and got[-1] == []


def test_clear_counts_pending_frames_as_dropped():
    s = LatestFrameScheduler(["a", "b"], max_batch=2)
    s.offer("a", 1)
    s.clear()
    assert s.replaced["a"] == 1 and s.pending() == 0


def test_group_by_task_set_keeps_first_seen_order():
    items = [("a", ("semseg",)), ("b", ("depth",)), ("c", ("semseg",))]
    groups = group_by(items, lambda _cam, tasks: tasks)
    assert list(groups) == [("semseg",), ("depth",)]
    assert [c for c, _ in groups["semseg",]] == ["a", "c"]


@pytest.mark.parametrize("cameras, batch", [([], 1), (["a"], 0)])
def test_bad_construction(cameras, batch):
    with pytest.raises(ValueError):
        LatestFrameScheduler(cameras, batch)
