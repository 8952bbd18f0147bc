# SPDX-License-Identifier: Apache-2.0
"""bench/soak.py's accounting rules on hand-made timelines (no ROS, no node): which task sets a
frame may be answered with, and which answers are wrong.

Why: the 10,000-frame soak once reported 16 "wrong-task" answers that were frames processed after
a later switch, which the node's documented rule (a switch applies to the next frame processed)
allows. These tests pin the rule the soak now applies, both ways."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import soak  # noqa: E402 - bench/ is not a package

BOTH = ("semseg", "depth")


def controller(*marks: tuple[float, float, tuple[str, ...] | None]) -> soak.Controller:
    """A controller with only a timeline: (begun, done, tasks) per action after a start at 0."""
    ctl = object.__new__(soak.Controller)
    ctl.timeline = [(0.0, BOTH, "start")] + [(done, tasks, "x") for _, done, tasks in marks]
    ctl.begun = [0.0] + [begun for begun, _, _ in marks]
    return ctl


def test_a_frame_processed_after_a_later_switch_may_carry_the_new_tasks():
    ctl = controller((10.0, 10.1, ("depth",)))
    # sent at 5 s (both on), answered at 12 s: the switch at 10 s may have come first
    assert set(map(tuple, ctl.possible_tasks(5.0, 12.0))) == {BOTH, ("depth",)}
    assert soak.wrong_task_frames(ctl, {1: 5.0}, {1: {"depth": 12.0}}) == []


def test_a_frame_answered_before_the_switch_began_may_not():
    ctl = controller((10.0, 10.1, ("depth",)))
    assert ctl.possible_tasks(5.0, 6.0) == [BOTH]
    assert soak.wrong_task_frames(ctl, {1: 5.0}, {1: {"semseg": 6.0, "depth": 6.1}}) == []
    # semseg alone is a subset of what was on: allowed; a task never on in the window is not
    ctl = controller((10.0, 10.1, ("depth",)), (20.0, 20.1, ("semseg",)))
    assert soak.wrong_task_frames(ctl, {1: 15.0}, {1: {"semseg": 16.0}}) == [1]


def test_the_state_before_an_action_stays_possible_while_it_takes_effect():
    ctl = controller((10.0, 10.1, ("depth",)))
    # a task_request is still on its way just after the controller published it
    assert set(map(tuple, ctl.possible_tasks(10.5, 10.9))) == {BOTH, ("depth",)}
    # long after it, only the new set
    late = 10.1 + soak.APPLY_S + 1.0
    assert ctl.possible_tasks(late, late + 1.0) == [("depth",)]
    assert soak.wrong_task_frames(ctl, {1: late}, {1: {"semseg": late + 1.0}}) == [1]


def test_inactive_spans_allow_no_answer_of_their_own():
    ctl = controller((10.0, 10.0, None), (11.0, 11.5, ("semseg",)))
    assert ctl.possible_tasks(20.0, 21.0) == [("semseg",)]
    # one output set comes from one task set: both outputs need a set holding both
    ctl = controller((10.0, 10.1, ("depth",)), (20.0, 20.1, ("semseg",)))
    assert soak.wrong_task_frames(ctl, {1: 15.0}, {1: {"semseg": 21.0, "depth": 21.0}}) == [1]
