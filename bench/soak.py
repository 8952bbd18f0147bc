# SPDX-License-Identifier: Apache-2.0
"""Soak and fault injection on a live ``edgemoe_node``: nothing lost, nothing leaked, never down.

    .venv/bin/python bench/soak.py --frames 10000 --json build/soak.json     # ~56 min at 3 Hz
    .venv/bin/python bench/soak.py --frames 180 --json build/soak_short.json  # ~75 s, test-slow

Three processes on a private ROS graph (random domain, localhost discovery; test/ros_testing.py):

* the node: the shipped model on the ``fpga`` backend with ``fallback_backend: cpu``, 1280x720
  in, reliable QoS, latest-frame-wins queue of 1. The fpga backend is the real one (driver,
  register map, device buffers and syncs, ap_start / ap_done polling, timeout, PL-reset recovery)
  on a simulated board whose hardware model computes the backbone with the cpu backend
  (``fpga_host``, test/host_hardware.py: fast enough for 720p, not bit-exact; the C-simulation
  behind ``simulate=True`` is ~100x too slow here), started through test/fault_injection.py,
  which registers it;
* a publisher (``--role publisher``, this file): good 720p frames at ``--rate`` (one the backend
  sustains), each with a unique stamp, a hostile input of a SPEC §7 kind every ``BAD_EVERY``
  frames, and one camera outage of ``OUTAGE_S`` half-way;
* this process, the controller: every ``--switch-every`` seconds the next action of ``ACTIONS``:
  a task switch through each of the four paths (``tasks`` parameter, ``~/task_request``, the
  SetBool services, ``auto``); a device fault at the board's next ap_start, cycling
  ``DEVICE_FAULTS`` (a hang the driver times out after ``HANG_TIMEOUT_S``, a bad status, corrupt
  output; injected from this process through a file the board reads): the node drops and counts
  that frame and falls back to cpu; ``~/reload_model`` of a good file, the node's documented way
  back to the primary (/diagnostics must name it again within ``PRIMARY_S``; after a hang the
  driver first resets the PL), then of a corrupt one (refused, the running model kept); a
  lifecycle deactivate/activate. It also collects the outputs and /diagnostics.

Accounting, from the publisher's log of sent frames and the controller's timeline of actions:
a good frame is *owed* an answer when it was sent while the node was active with a task on, not
within ``MARGIN_S`` before an action (a switch applies to the next frame processed) nor within
``MATCH_S`` after an activate. ``lost_stamps``
are owed frames never answered beyond what the node reports it dropped by design
(``dropped_latest``: the latest-frame-wins queue, and queued frames discarded on deactivate;
``backend_faults``: frames a failing device took down) and beyond what DDS never delivered to it
(``not_delivered_by_dds``: frames sent while it was active minus its "frames received"), so it
is a lower bound on loss: a positive value is a defect, 0 is the goal. ``unaccounted_in_node`` is
exact: frames the node took in and neither published nor counted as dropped (must be 0).
``faults_unexplained`` is exact too: the node's backend faults minus the faults the board took
(must be 0), and each fault must have moved the node to its fallback (``fallbacks``).
``device_faults_not_taken`` are injections no kernel call took within ``PICKUP_S`` although
frames came (must be 0); one made as the stream ended is ``device_faults_after_last_frame``.
``wrong_task_outputs`` are answered frames (owed or not) whose outputs no task set in force
between the frame's sending and its first output could give: a switch applies to the next frame
processed, so a frame sent before a switch and processed after it may carry the new set
(``Controller.possible_tasks``); an output of a task that was off the whole time is a defect.
``bad_inputs_owed`` are hostile inputs sent while the node listened (away from transitions);
each must be counted. ``exceptions`` counts
tracebacks in the node's log; a refused corrupt reload logs an error, not a traceback.

Memory: RSS is sampled once per cycle of ``ACTIONS``, right after the corrupt reload (the node
has just trimmed its heap: the quietest point, ±30 MB of frame buffers and worker-thread arenas
move between other points). ``rss_start_mb`` is the first sample after one full cycle (every
path has run once: the first reload, fault, fallback and activation allocate what they keep),
so ``rss_growth_pct`` (to ``rss_end_mb``, after the drain) is growth in the steady state,
conservatively (the end is not sampled just after a trim; ``rss_end_trimmed_mb`` is, after one
more refused reload outside the accounting, and ``rss_growth_trimmed_pct`` compares like with
like). ``rss_per_cycle_mb`` holds every
sample and ``rss_slope_mb_per_cycle`` their least-squares trend from the baseline on (a leak
shows there whatever the noise); ``rss_first_mb`` is ``WARM_S`` after the publisher started,
before the start-up peak was given back.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test"))  # the node/test harness is shared with the ROS tests

#: Good frames between two hostile inputs.
BAD_EVERY = 25
#: The camera goes silent this long, once, half-way through.
OUTAGE_S = 3.0
#: Frames sent this shortly before an action are not owed an answer: they may be processed after
#: it (queue and inference take up to ~2 s at p99 here), or discarded by a deactivate (counted).
MARGIN_S = 2.5
#: Frames sent this shortly after an activate are not owed one either: the new subscription is
#: still being matched by DDS, and what it misses never reaches the node.
MATCH_S = 2.0
#: Seconds after an action's call returned during which the node may still apply the state
#: before it (a ``~/task_request`` message is still on its way; a deactivate lets the frame in
#: hand finish).
APPLY_S = 2.0
#: Seconds between deactivate and activate.
INACTIVE_S = 1.0
#: Seconds after the last frame for the node to answer it.
DRAIN_S = 5.0
#: Seconds of frames before the first RSS sample and the first action.
WARM_S = 10.0
#: Controller actions, cycled: (name, what it does). The four task-switch paths come first.
ACTIONS = (
    "param_semseg",
    "request_depth",
    "setbool_both",
    "request_auto",
    "device_fault",
    "reload_good",
    "reload_bad",
    "lifecycle_cycle",
)
#: The primary backend: the ``fpga`` backend's driver on a simulated board computing at cpu speed
#: (test/host_hardware.py), registered by the node's executable (test/fault_injection.py).
PRIMARY = "fpga_host"
FAULT_EXE = [sys.executable, str(ROOT / "test" / "fault_injection.py")]
#: Device faults injected at the board's next ap_start, cycled (``sim_device.Fault`` values): a
#: hung kernel (the driver times out; the next primary call resets the PL), a bad status (the
#: start reports a hardware error), and finished-but-corrupt output (out-of-range expert ids).
DEVICE_FAULTS = ("hang", "error", "corrupt")
#: The simulated accelerator's timeout (fpga ``timeout_s``): how long a hung kernel holds a frame.
HANG_TIMEOUT_S = 1.0
#: Seconds for the node's next primary kernel call to take an injected fault (generous: on a
#: loaded host a 720p frame can wait seconds in the queue and DDS).
PICKUP_S = 15.0
#: Seconds, after a good reload, for /diagnostics to name the primary backend again.
PRIMARY_S = 5.0
H, W = 720, 1280
#: The JSON keys issue 20 asks for.
ISSUE_KEYS = (
    "frames_sent",
    "frames_out",
    "lost_stamps",
    "dropped_latest",
    "bad_inputs_counted",
    "rss_start_mb",
    "rss_end_mb",
    "rss_growth_pct",
    "exceptions",
    "p50_ms",
    "p99_ms",
)
#: Printed beside them (the JSON holds these and a few more).
DETAIL_KEYS = (
    "frames_owed",
    "not_delivered_by_dds",
    "unaccounted_in_node",
    "backend_faults",
    "fallbacks",
    "device_faults_taken",
    "device_faults_not_taken",
    "device_faults_after_last_frame",
    "fault_pickup_max_s",
    "faults_unexplained",
    "pl_resets",
    "wrong_task_outputs",
    "wrong_task_detail",
    "bad_inputs_sent",
    "bad_inputs_owed",
    "actions",
    "reloads",
    "rss_baseline",
    "rss_end_trimmed_mb",
    "rss_growth_trimmed_pct",
    "rss_first_mb",
    "rss_per_cycle_mb",
    "rss_slope_mb_per_cycle",
    "node_active_at_end",
)


# ----------------------------------------------------------------------------- publisher process
def hostile_inputs() -> list[tuple[str, Any]]:
    """One message per SPEC §7 bad-input kind the node's inputs can receive: (topic, message)."""
    from ros_testing import make_camera_info, make_image

    def raw(**fields: Any) -> Any:
        msg = make_image(16, 16, "rgb8")
        for k, v in fields.items():
            setattr(msg, k, v)
        return msg

    bad_info = make_camera_info(H, W)
    bad_info.k = [float("nan")] * 9
    return [
        ("image", raw(encoding="yuv999")),
        ("image", raw(width=0, height=0, step=0, data=b"")),
        ("image", raw(step=7)),
        ("image", raw(data=bytes(100))),
        ("image", raw(width=100_000, height=100_000, step=300_000)),
        ("camera_info", bad_info),
    ]  # corrupt compressed frames: test_node_bad_inputs (the node reads one transport, raw here)


def run_publisher(frames: int, rate: float, out: Path) -> int:
    """Publish ``frames`` good 720p frames (and the hostile inputs) and log what was sent."""
    import rclpy
    from rclpy.duration import Duration
    from ros_testing import make_camera_info, make_image, reliable_qos
    from sensor_msgs.msg import CameraInfo, Image

    rclpy.init()
    node = rclpy.create_node("edgemoe_soak_publisher")
    pubs = {
        "image": node.create_publisher(Image, "image", reliable_qos()),
        "camera_info": node.create_publisher(CameraInfo, "camera_info", reliable_qos()),
    }
    deadline = time.monotonic() + 60
    while (
        any(p.get_subscription_count() < 1 for p in pubs.values()) and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    pixels = np.random.default_rng(3).integers(0, 256, (H, W, 3), dtype=np.uint8)
    hostile = hostile_inputs()
    sent: list[list[Any]] = []
    start = time.monotonic()
    for i in range(frames):
        if i == frames // 2:
            time.sleep(OUTAGE_S)  # the camera stops and comes back
        t = time.time()
        msg = make_image(H, W, "rgb8", pixels=pixels)
        pubs["camera_info"].publish(
            make_camera_info(H, W, stamp=(msg.header.stamp.sec, msg.header.stamp.nanosec))
        )
        pubs["image"].publish(msg)
        sent.append([msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec, t, "good"])
        if i % BAD_EVERY == BAD_EVERY - 1:
            topic, bad = hostile[(i // BAD_EVERY) % len(hostile)]
            pubs[topic].publish(bad)
            sent.append([0, time.time(), topic])
        time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
    for pub in pubs.values():
        pub.wait_for_all_acked(Duration(seconds=10))
    out.write_text(json.dumps(sent))
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


# ----------------------------------------------------------------------------- controller
class Controller:
    """Drives the node through ``ACTIONS`` and keeps a timeline: (wall time, tasks on or None)."""

    def __init__(self, harness: Any, bad_weights: Path, fault_file: Path, diag: Any) -> None:
        self.h, self.c = harness, harness.client
        self.bad_weights, self.fault_file, self.diag = bad_weights, fault_file, diag
        self.timeline: list[tuple[float, tuple[str, ...] | None, str]] = [
            (time.time(), ("semseg", "depth"), "start")
        ]
        #: When each action of ``timeline`` was begun (its entry is made once its call returned):
        #: the node may apply it anywhere from here on.
        self.begun: list[float] = [self.timeline[0][0]]
        self.reloads = {
            "good_ok": 0,
            "good_failed": 0,
            "bad_refused": 0,
            "bad_accepted": 0,
            "back_on_primary": 0,
            "not_back_on_primary": 0,
        }
        #: Faults the board took at an ap_start, by kind, and injections no kernel call took.
        self.faults_taken = {name: 0 for name in DEVICE_FAULTS}
        self.not_taken_at: list[float] = []  # wall times of injections no kernel call took
        self.pickup_s: list[float] = []
        self._next = 0
        self._faults_sent = 0
        from std_msgs.msg import String

        self._request = self.c.publisher(harness.srv("task_request"), String)
        self.c.wait_for_subscribers(self._request)

    def step(self) -> None:
        action = ACTIONS[self._next % len(ACTIONS)]
        self._next += 1
        getattr(self, "_" + action)()

    @property
    def actions_done(self) -> int:
        return self._next

    def _mark(self, tasks: tuple[str, ...] | None, what: str, begun: float | None = None) -> None:
        now = time.time()
        self.timeline.append((now, tasks, what))
        self.begun.append(now if begun is None else begun)

    def _param_semseg(self) -> None:
        begun = time.time()
        self.c.set_parameters(self.h.node_name, {"tasks": ["semseg"]})
        self._mark(("semseg",), "tasks parameter", begun)

    def _request_depth(self) -> None:
        from std_msgs.msg import String

        self._request.publish(String(data="depth"))
        self._mark(("depth",), "task_request")

    def _setbool_both(self) -> None:
        from std_srvs.srv import SetBool

        begun = time.time()
        self.c.call(SetBool, self.h.srv("enable_segmentation"), SetBool.Request(data=True))
        self._mark(("semseg", "depth"), "SetBool", begun)

    def _request_auto(self) -> None:
        from std_msgs.msg import String

        self._request.publish(String(data="auto"))  # this process subscribes to both outputs
        self._mark(("semseg", "depth"), "auto")

    def _device_fault(self) -> None:
        """The next of ``DEVICE_FAULTS`` at the board's next ap_start; the node drops that frame,
        counts it and runs on its fallback (cpu) until the next good reload."""
        from host_hardware import inject_fault
        from ros_testing import wait_until

        fault = DEVICE_FAULTS[self._faults_sent % len(DEVICE_FAULTS)]
        self._faults_sent += 1
        self._mark(self.timeline[-1][1], f"device {fault}")
        inject_fault(self.fault_file, fault)
        start = time.monotonic()
        try:
            wait_until(
                lambda: not self.fault_file.exists(), PICKUP_S, "the board to take the fault"
            )
            self.faults_taken[fault] += 1
            self.pickup_s.append(time.monotonic() - start)
        except AssertionError:
            self.fault_file.unlink(missing_ok=True)
            self.not_taken_at.append(self.timeline[-1][0])

    def _reload(self, weights_path: str) -> bool:
        from std_srvs.srv import Trigger

        self.c.set_parameters(self.h.node_name, {"weights_path": weights_path})
        return bool(
            self.c.call(
                Trigger, self.h.srv("reload_model"), Trigger.Request(), timeout=120
            ).success
        )

    def _reload_good(self) -> None:
        """Reload the shipped model: the node's documented way back from its fallback to the
        primary (node.py ``_backend_fault``); /diagnostics must name the primary again."""
        ok = self._reload("")
        seen = len(self.diag.messages)
        self.reloads["good_ok" if ok else "good_failed"] += 1
        self._mark(self.timeline[-1][1], "reload good")
        if ok:
            back = self._diag_backend_is(PRIMARY, seen)
            self.reloads["back_on_primary" if back else "not_back_on_primary"] += 1

    def _diag_backend_is(self, backend: str, start: int) -> bool:
        from ros_testing import diag_values

        try:
            self.diag.wait_for(
                lambda m: diag_values(m).get("backend") == backend, PRIMARY_S, start
            )
        except AssertionError:
            return False
        return True

    def _reload_bad(self) -> None:
        self.reloads["bad_refused" if self.refused_reload() else "bad_accepted"] += 1
        self._mark(self.timeline[-1][1], "reload bad")

    def refused_reload(self) -> bool:
        """``~/reload_model`` of the corrupt file, then the shipped one named again; True if
        refused. The node trims its heap after it (``allocator.release_free_memory``)."""
        accepted = self._reload(str(self.bad_weights))
        self.c.set_parameters(self.h.node_name, {"weights_path": ""})
        return not accepted

    def _lifecycle_cycle(self) -> None:
        from lifecycle_msgs.msg import Transition

        tasks = self.timeline[-1][1]
        self._mark(None, "deactivate")
        self.c.change_state(self.h.node_name, Transition.TRANSITION_DEACTIVATE)
        time.sleep(INACTIVE_S)
        begun = time.time()
        self.c.change_state(self.h.node_name, Transition.TRANSITION_ACTIVATE)
        self._mark(tasks, "activate", begun)

    def active_at(self, t: float) -> bool:
        """Was the node active (subscribed, processing) when a message was sent at ``t``."""
        state: tuple[str, ...] | None = ()
        for when, tasks, _ in self.timeline:
            if when <= t:
                state = tasks
        return state is not None

    def owed(self, t: float) -> tuple[str, ...]:
        """Tasks a frame sent at wall time ``t`` must be answered with (() = not owed)."""
        if any(0.0 <= when - t < MARGIN_S for when, _, _ in self.timeline[1:]):
            return ()
        if any(
            what == "activate" and 0.0 <= t - when < MATCH_S for when, _, what in self.timeline
        ):
            return ()
        tasks: tuple[str, ...] | None = ()
        for when, state, _ in self.timeline:
            if when <= t:
                tasks = state
        return tasks or ()

    def possible_tasks(self, sent: float, answered: float) -> list[tuple[str, ...]]:
        """Task sets the node may have applied to a frame sent at ``sent`` and answered at
        ``answered``: a switch applies to the next frame processed, which may be any time in
        between. That is the set in force when it was sent (and the one before, while the last
        action may still be taking effect: ``APPLY_S`` after its call returned, e.g. a
        ``~/task_request`` message still on its way) and every set begun before the answer."""
        possible: list[tuple[str, ...] | None] = []
        for i, (done, tasks, _) in enumerate(self.timeline):
            if self.begun[i] <= sent:
                taking_effect = i > 0 and done + APPLY_S >= sent
                possible = [self.timeline[i - 1][1], tasks] if taking_effect else [tasks]
            elif self.begun[i] <= answered:
                possible.append(tasks)
        return [tasks for tasks in possible if tasks]


def wrong_task_frames(
    ctl: Controller, sent_at: dict[int, float], received: dict[int, dict[str, float]]
) -> list[int]:
    """Stamps of answered frames whose outputs no task set in force between their sending and
    their first output could give (a switch applies to the next frame processed, so any set in
    that window is right; outputs of one frame come from one set)."""
    return [
        stamp
        for stamp, outs in received.items()
        if stamp in sent_at
        and not any(
            set(outs) <= set(tasks)
            for tasks in ctl.possible_tasks(sent_at[stamp], min(outs.values()))
        )
    ]


# ----------------------------------------------------------------------------- the run
def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024.0


def run_soak(frames: int, rate: float, switch_every: float) -> dict[str, Any]:
    import subprocess
    import tempfile

    from ros_testing import NodeHarness, diag_values, reliable_qos, wait_until
    from sensor_msgs.msg import Image

    from edgemoe_ros.ros.topic_names import DEPTH_IMAGE, SEGMENTATION_IMAGE

    fault_file = Path(tempfile.mkdtemp(prefix="edgemoe_soak_")) / "device_fault"
    h = NodeHarness(
        params={
            "weights_path": "",
            "backend": PRIMARY,
            "fallback_backend": "cpu",
            "backend_options": json.dumps(
                {"fault_file": str(fault_file), "timeout_s": HANG_TIMEOUT_S}
            ),
            "input_qos": "reliable",
            "output_qos": "reliable",
            "queue_size": 1,
            "max_image_pixels": H * W,
            "diagnostics_period": 1.0,
        },
        weights=False,
        executable=FAULT_EXE,
    )
    try:
        c = h.client
        received: dict[int, dict[str, float]] = {}

        def collect(task: str):
            def on_output(msg: Image) -> None:
                stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                received.setdefault(stamp, {})[task] = time.time()

            return on_output

        for task, topic in (("semseg", SEGMENTATION_IMAGE), ("depth", DEPTH_IMAGE)):
            # Stamps and arrival times only: 10,000 kept 720p messages would be gigabytes here.
            c.node.create_subscription(Image, topic, collect(task), reliable_qos())
        diag = c.diagnostics()
        bad_weights = h.tmp / "corrupt.safetensors"
        shipped = ROOT / "edgemoe_ros" / "data" / "edgemoe_synth.safetensors"
        bad_weights.write_bytes(shipped.read_bytes()[: 1 << 20])  # truncated: must be refused
        ctl = Controller(h, bad_weights, fault_file, diag)
        sent_log = h.tmp / "sent.json"
        publisher = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--role",
                "publisher",
                "--frames",
                str(frames),
                "--rate",
                str(rate),
                "--out",
                str(sent_log),
            ],
            env=h.env,
        )
        t0 = time.monotonic()
        time.sleep(WARM_S)
        rss_first = rss_mb(h.node.proc.pid)
        # RSS once per cycle, just after the corrupt reload (module docstring): (s in, actions
        # done, MB).
        rss_cycles: list[tuple[float, int, float]] = []
        next_action = time.monotonic() + switch_every
        while publisher.poll() is None:
            if time.monotonic() >= next_action:
                ctl.step()
                if ACTIONS[(ctl.actions_done - 1) % len(ACTIONS)] == "reload_bad":
                    rss = rss_mb(h.node.proc.pid)
                    rss_cycles.append((time.monotonic() - t0, ctl.actions_done, rss))
                next_action = time.monotonic() + switch_every
            time.sleep(0.05)
        time.sleep(DRAIN_S)
        rss_end = rss_mb(h.node.proc.pid)
        ctl.refused_reload()  # the baseline's phase (just trimmed), outside the accounting
        rss_end_trimmed = rss_mb(h.node.proc.pid)
        # The baseline: the first sample after one full cycle, or the first one in a shorter run.
        steady = [c for c in rss_cycles if c[1] > len(ACTIONS)]
        rss_start = (steady or rss_cycles or [(WARM_S, 0, rss_first)])[0][2]
        wait_until(
            lambda: bool(diag.messages) and bool(diag_values(diag.messages[-1])), 10, "diagnostics"
        )
        values = diag_values(diag.messages[-1])
        active = c.get_state(h.node_name) == "active"
        alive = h.node.alive()
        log = h.node.output()
        sent = json.loads(sent_log.read_text()) if sent_log.is_file() else []
    finally:
        h.close()
        shutil.rmtree(fault_file.parent, ignore_errors=True)
    good = [(stamp, t) for stamp, t, kind in sent if kind == "good"]
    owed = {stamp: ctl.owed(t) for stamp, t in good}
    owed = {s: tasks for s, tasks in owed.items() if tasks}
    unanswered = [s for s in owed if s not in received]
    sent_at = dict(good)
    wrong = wrong_task_frames(ctl, sent_at, received)
    wrong_task = len(wrong)
    wrong_detail = [
        {
            "stamp_ns": s,
            "owed": list(owed.get(s, ())),
            "possible": [
                list(tasks) for tasks in ctl.possible_tasks(sent_at[s], min(received[s].values()))
            ],
            "got": sorted(received[s]),
            "answer_after_s": round(max(received[s].values()) - sent_at[s], 3),
            "next_action_after_s": round(
                min((w - sent_at[s] for w, _, _ in ctl.timeline if w > sent_at[s]), default=-1.0),
                3,
            ),
            "next_action": next((a for w, _, a in ctl.timeline if w > sent_at[s]), ""),
        }
        for s in wrong[:50]
    ]
    latency = np.array(
        [(t - s / 1e9) * 1e3 for s, outs in received.items() for t in outs.values()]
    )
    dropped = int(values.get("frames dropped (queue)", 0))
    faults = int(values.get("backend faults", 0))
    received_by_node = int(values.get("frames received", 0))
    # What DDS did not deliver at all (a keep-last reader history overwritten while the node's
    # callbacks lagged; a new subscription not matched yet): the node never saw those frames.
    not_delivered = max(0, sum(1 for _, t in good if ctl.active_at(t)) - received_by_node)
    bad_owed = sum(1 for _, t, kind in sent if kind != "good" and ctl.owed(t))
    frames_came = [
        any(t <= ts <= t + PICKUP_S - MARGIN_S for _, ts in good) for t in ctl.not_taken_at
    ]
    return {
        "frames": frames,
        "rate_hz": rate,
        "frames_sent": len(good),
        "frames_out": len(received),
        "frames_owed": len(owed),
        "unanswered_owed": len(unanswered),
        "lost_stamps": max(0, len(unanswered) - dropped - faults - not_delivered),
        "dropped_latest": dropped,
        "not_delivered_by_dds": not_delivered,
        # Exact, from the node's own counters: every frame it took in was published, dropped by
        # the queue or lost to a device fault.
        "unaccounted_in_node": received_by_node
        - int(values.get("frames processed", 0))
        - dropped
        - faults
        - int(values.get("frames skipped (no task)", 0)),
        "backend_faults": faults,
        "fallbacks": int(values.get("fallbacks", 0)),
        # Every fault the node counted is one the board took (nothing else failed), and each one
        # moved it to the fallback; each good reload brought it back to the primary.
        "device_faults_taken": ctl.faults_taken,
        # An injection no kernel call took is a defect only if frames came to take it (one made
        # as the stream ended has none); those are counted apart.
        "device_faults_not_taken": sum(frames_came),
        "device_faults_after_last_frame": len(frames_came) - sum(frames_came),
        "fault_pickup_max_s": round(max(ctl.pickup_s), 2) if ctl.pickup_s else None,
        "faults_unexplained": faults - sum(ctl.faults_taken.values()),
        "pl_resets": log.count("is idle again after the PL reset"),
        "wrong_task_outputs": wrong_task,
        "wrong_task_detail": wrong_detail,
        "bad_inputs_sent": sum(1 for _, _, kind in sent if kind != "good"),
        "bad_inputs_owed": bad_owed,
        "bad_inputs_counted": int(values.get("bad inputs", 0)),
        "rss_start_mb": round(rss_start, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_growth_pct": round(100.0 * (rss_end - rss_start) / rss_start, 2),
        "rss_baseline": (
            f"just after the corrupt reload of cycle 2 ({steady[0][0]:.0f} s in): warm, every "
            "path run once, heap just trimmed"
            if steady
            else "the run ended before a second cycle: an earlier sample, not steady state"
        ),
        # The same phase as the baseline: what remains once the node has trimmed its heap.
        "rss_end_trimmed_mb": round(rss_end_trimmed, 1),
        "rss_growth_trimmed_pct": round(100.0 * (rss_end_trimmed - rss_start) / rss_start, 2),
        "rss_first_mb": round(rss_first, 1),
        "rss_growth_from_first_pct": round(100.0 * (rss_end - rss_first) / rss_first, 2),
        "rss_per_cycle_mb": [round(mb, 1) for _, _, mb in rss_cycles],
        "rss_slope_mb_per_cycle": (
            round(float(np.polyfit(range(len(steady)), [mb for _, _, mb in steady], 1)[0]), 2)
            if len(steady) >= 3
            else None
        ),
        "exceptions": log.count("Traceback (most recent call last)"),
        # The last line of each traceback (the exception), so a failed run says what to look at.
        "exception_lines": _exception_lines(log),
        "p50_ms": float(np.percentile(latency, 50)) if latency.size else None,
        "p99_ms": float(np.percentile(latency, 99)) if latency.size else None,
        "actions": len(ctl.timeline) - 1,
        "reloads": ctl.reloads,
        "node_active_at_end": active,
        "node_alive_at_end": alive,
        "diagnostics": values,
    }


def _exception_lines(log: str) -> list[str]:
    """The exception line ending each traceback in ``log`` (first 20)."""
    out, lines = [], log.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            end = next(
                (j for j in range(i + 1, len(lines)) if not lines[j].startswith((" ", "\t"))), None
            )
            if end is not None:
                out.append(lines[end])
    return out[:20]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--frames", type=int, default=10_000, help="good 720p frames to send (default 10000)"
    )
    p.add_argument(
        "--rate",
        type=float,
        default=3.0,
        help="frames per second (default 3: what the simulated fpga board, one backbone pass per "
        "task at cpu speed, sustains with both tasks on a shared 2-core VM)",
    )
    p.add_argument(
        "--switch-every", type=float, default=6.0, help="seconds between controller actions"
    )
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument(
        "--role", choices=("controller", "publisher"), default="controller", help=argparse.SUPPRESS
    )
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role == "publisher":
        return run_publisher(args.frames, args.rate, args.out)
    doc = run_soak(args.frames, args.rate, args.switch_every)
    for key in (*ISSUE_KEYS, *DETAIL_KEYS):
        print(f"{key:20s} {doc[key]}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2))
    ok = (
        doc["lost_stamps"] == 0
        and doc["unaccounted_in_node"] == 0
        and doc["exceptions"] == 0
        and doc["node_active_at_end"]
        and doc["wrong_task_outputs"] == 0
        and doc["bad_inputs_owed"] <= doc["bad_inputs_counted"] <= doc["bad_inputs_sent"]
        and doc["faults_unexplained"] == 0
        and doc["device_faults_not_taken"] == 0
        and doc["fallbacks"] == doc["backend_faults"]
        and doc["reloads"]["not_back_on_primary"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
