# SPDX-License-Identifier: Apache-2.0
"""Unit tests of the task state machine (pure Python, no ROS)."""

import threading

import pytest

from edgemoe_ros.ros.task_switch import (
    AUTO,
    MODE_AUTO,
    MODE_EXPLICIT,
    TaskRequestError,
    TaskSwitch,
    parse_task_list,
    parse_task_request,
)


def test_parse_task_list_orders_by_task_id_and_detects_auto():
    assert parse_task_list(["depth", "semseg"]) == ("semseg", "depth")
    assert parse_task_list([]) == ()
    assert parse_task_list([AUTO]) is None


@pytest.mark.parametrize(
    "bad", [["segmentation"], ["semseg", "semseg"], ["auto", "depth"], ["SEMSEG"]]
)
def test_parse_task_list_rejects_bad_lists_naming_them(bad):
    with pytest.raises(TaskRequestError) as err:
        parse_task_list(bad)
    assert repr(bad[0]) in str(err.value) or repr(bad) in str(err.value)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("semseg", ("semseg",)),
        ("depth", ("depth",)),
        (" semseg , depth ", ("semseg", "depth")),
        ("auto", None),
    ],
)
def test_parse_task_request(text, expected):
    assert parse_task_request(text) == expected


@pytest.mark.parametrize("text", ["", ",", "semseg,", "normals", "semseg,,depth", "none"])
def test_parse_task_request_rejects(text):
    with pytest.raises(TaskRequestError):
        parse_task_request(text)


def test_explicit_set_and_snapshot():
    sw = TaskSwitch(["semseg"])
    st = sw.snapshot()
    assert (st.mode, st.active) == (MODE_EXPLICIT, ("semseg",))
    assert sw.set_tasks(["semseg", "depth"]) is True
    assert sw.snapshot().active == ("semseg", "depth")
    assert sw.set_tasks(["depth", "semseg"]) is False  # same state, no version bump
    assert sw.as_parameter() == ["semseg", "depth"]


def test_enable_disable_services():
    sw = TaskSwitch(["semseg", "depth"])
    v0 = sw.snapshot().version
    assert sw.enable("depth", False)
    assert sw.snapshot().active == ("semseg",)
    assert not sw.enable("depth", False)
    assert sw.enable("semseg", False)
    assert sw.snapshot().active == ()
    assert sw.enable("depth", True)
    st = sw.snapshot()
    assert st.active == ("depth",) and st.version == v0 + 3
    with pytest.raises(TaskRequestError):
        sw.enable("normals", True)


def test_bad_request_leaves_state_unchanged():
    sw = TaskSwitch(["depth"])
    before = sw.snapshot()
    with pytest.raises(TaskRequestError):
        sw.request("semseg,normals")
    after = sw.snapshot()
    assert (after.active, after.version) == (before.active, before.version)


def test_auto_runs_only_subscribed_tasks():
    sw = TaskSwitch([AUTO])
    assert sw.mode == MODE_AUTO and sw.as_parameter() == [AUTO]
    assert sw.snapshot({"semseg": False, "depth": False}).active == ()
    assert sw.snapshot({"semseg": True, "depth": False}).active == ("semseg",)
    assert sw.snapshot(["depth", "semseg"]).active == ("semseg", "depth")


def test_setbool_leaves_auto_starting_from_what_runs():
    sw = TaskSwitch([AUTO])
    assert sw.enable("depth", True, subscribed={"semseg": True, "depth": False})
    st = sw.snapshot({})
    assert (st.mode, st.active) == (MODE_EXPLICIT, ("semseg", "depth"))
    sw.request("auto")
    sw.snapshot({"depth": True})  # last frame ran depth only
    sw.enable("semseg", False)
    assert sw.snapshot().active == ("depth",)


def test_snapshot_is_immutable_and_consistent_under_concurrent_switching():
    sw = TaskSwitch(["semseg", "depth"])
    valid = {(), ("semseg",), ("depth",), ("semseg", "depth")}
    stop = threading.Event()
    seen = []

    def reader():
        while not stop.is_set():
            st = sw.snapshot()
            seen.append(st)
            assert st.active == st.enabled  # explicit mode: never a half-applied state

    t = threading.Thread(target=reader)
    t.start()
    for i in range(2000):
        sw.set_tasks([["semseg"], ["depth"], ["semseg", "depth"], []][i % 4])
    stop.set()
    t.join()
    assert seen and all(s.active in valid for s in seen)
    with pytest.raises(AttributeError):
        seen[0].active = ("x",)


def test_snapshot_asks_for_subscribers_only_in_auto_mode():
    calls = []

    def subscribed():
        calls.append(1)
        return {"depth": True}

    ts = TaskSwitch(["semseg"])
    assert ts.snapshot(subscribed).active == ("semseg",) and calls == []
    ts.request("auto")
    assert ts.snapshot(subscribed).active == ("depth",) and calls == [1]
