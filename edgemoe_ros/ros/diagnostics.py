# SPDX-License-Identifier: Apache-2.0
"""What the node reports on ``/diagnostics`` and how often it logs (SPEC §5, §7).

The statistics classes are plain Python (thread-safe, unit tested without ROS); only
:func:`build_status` touches ``diagnostic_msgs``. Latency is kept as percentiles over a rolling
window of recent frames because a mean hides exactly the stalls a vehicle integrator looks for.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from .guards import log_at

#: Frames kept for latency percentiles (~10 s at 30 FPS).
LATENCY_WINDOW = 300
#: Seconds over which input/output rates are measured.
RATE_WINDOW_S = 5.0
PERCENTILES = (50, 90, 99)
#: Seconds between two log lines of the same kind (bad input of one kind, backend fault, ...).
LOG_THROTTLE_S = 5.0
#: Hardware-style name of our status entry.
STATUS_NAME_SUFFIX = "edgemoe"
#: Received / offered below this fraction (over the rate window) turns /diagnostics WARN.
MIN_RECEIVED_FRACTION = 0.95
#: Frames in the window before the offered rate is trusted (a period needs a few intervals).
MIN_FRAMES_FOR_OFFERED = 5
#: Percentile of the stamp intervals taken as the camera period: the median, exact while fewer
#: than half the intervals span a lost frame; heavier loss shows as a slower camera plus DDS's
#: lost-sample count.
PERIOD_PERCENTILE = 50


class RollingRate:
    """Events per second over the last ``window_s`` seconds."""

    def __init__(self, window_s: float = RATE_WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window_s
        self._clock = clock
        self._times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def tick(self) -> None:
        with self._lock:
            self._times.append(self._clock())

    def rate(self) -> float:
        now = self._clock()
        with self._lock:
            while self._times and now - self._times[0] > self._window:
                self._times.popleft()
            if len(self._times) < 2:
                return 0.0
            # (n-1) intervals over the time since the oldest event: exact for a steady stream and
            # decays towards 0 once events stop, instead of freezing at the last rate.
            return (len(self._times) - 1) / max(now - self._times[0], 1e-9)


@dataclass(frozen=True)
class Reception:
    """What :class:`ReceptionMonitor` inferred: frames offered (from stamps) and received."""

    offered: float
    received: int
    period_s: float

    @property
    def offered_rate_hz(self) -> float:
        return 1.0 / self.period_s


class ReceptionMonitor:
    """Frames offered vs received, inferred from the header stamps of the frames that arrived.

    A camera stamps every frame one period apart; frames lost on the way (best-effort fragments,
    a reader history overwritten while the host was busy) leave intervals of several periods.
    Over the last ``window_s`` seconds of arrivals: period = a low percentile of the intervals,
    offered = 1 + the intervals counted in periods (rounded), received = frames that arrived. Needs no help from the
    publisher and no sequence numbers (sensor_msgs/Image has none). Stamps that do not increase
    (a bag restarting, a clock jump) restart the estimate. A loss that keeps exactly every n-th
    frame looks like a slower camera and is not seen; DDS's own lost-sample count (best effort)
    is reported beside it.
    """

    def __init__(self, window_s: float = RATE_WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window_s
        self._clock = clock
        self._frames: collections.deque[tuple[float, int]] = collections.deque()  # (arrival, stamp ns)
        self._lock = threading.Lock()

    def add(self, stamp_ns: int) -> None:
        now = self._clock()
        with self._lock:
            if self._frames and stamp_ns <= self._frames[-1][1]:
                self._frames.clear()
            self._frames.append((now, int(stamp_ns)))

    def estimate(self) -> Reception | None:
        """Offered and received frames over the window, or None while too few frames arrived."""
        now = self._clock()
        with self._lock:
            while self._frames and now - self._frames[0][0] > self._window:
                self._frames.popleft()
            stamps = np.fromiter((s for _, s in self._frames), dtype=np.int64)
        if stamps.size < MIN_FRAMES_FOR_OFFERED or stamps[0] <= 0:
            return None
        gaps = np.diff(stamps).astype(np.float64)
        period_ns = float(np.percentile(gaps, PERIOD_PERCENTILE))
        # Each interval stands for round(gap / period) frames: stamp jitter below half a period
        # (a software-stamped camera, a busy publisher) is not mistaken for loss.
        offered = 1.0 + float(np.maximum(1.0, np.rint(gaps / period_ns)).sum())
        return Reception(offered=offered, received=int(stamps.size), period_s=period_ns / 1e9)

    def shortfall(self) -> str | None:
        """A sentence for /diagnostics when fewer frames arrive than the stamps say were sent."""
        est = self.estimate()
        if est is None or est.received >= MIN_RECEIVED_FRACTION * est.offered:
            return None
        return (f"receiving {est.received} of ~{est.offered:.0f} frames the camera stamped in the last "
                f"{self._window:g} s ({100 * est.received / est.offered:.0f} %)")


class LatencyWindow:
    """Percentiles (ms) of the last ``maxlen`` samples."""

    def __init__(self, maxlen: int = LATENCY_WINDOW) -> None:
        self._samples: collections.deque[float] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, ms: float) -> None:
        with self._lock:
            self._samples.append(float(ms))

    def percentiles(self, qs: tuple[int, ...] = PERCENTILES) -> dict[int, float] | None:
        with self._lock:
            if not self._samples:
                return None
            arr = np.fromiter(self._samples, dtype=np.float64)
        return {q: float(np.percentile(arr, q)) for q in qs}


class KeyedThrottle:
    """Rate-limits log lines per key, counting what it suppressed so the next line can say so.

    rclpy's ``throttle_duration_sec`` throttles per call site, which would let one noisy kind of
    bad input hide every other kind behind it.
    """

    def __init__(self, period_s: float = LOG_THROTTLE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._period = period_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = collections.defaultdict(int)
        self._lock = threading.Lock()

    def allow(self, key: str) -> int | None:
        """None if this line must be suppressed, else how many lines of ``key`` were suppressed since."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._period:
                self._suppressed[key] += 1
                return None
            self._last[key] = now
            return self._suppressed.pop(key, 0)

    def log(self, logger: Any, level: str, key: str, message: str) -> None:
        """``logger.<level>(message)`` unless throttled; the line says how many were suppressed."""
        suppressed = self.allow(key)
        if suppressed is None:
            return
        if suppressed:
            message += f" ({suppressed} similar messages suppressed)"
        log_at(logger, level, message)  # not getattr(logger, level): see guards.log_at


@dataclass
class NodeStats:
    """Every counter the node reports, updated from callbacks and the worker thread."""

    input_rate: RollingRate = field(default_factory=RollingRate)
    reception: ReceptionMonitor = field(default_factory=ReceptionMonitor)
    output_rate: RollingRate = field(default_factory=RollingRate)
    stamp_to_publish_ms: LatencyWindow = field(default_factory=LatencyWindow)
    inference_ms: LatencyWindow = field(default_factory=LatencyWindow)
    bad_inputs: collections.Counter = field(default_factory=collections.Counter)
    counters: collections.Counter = field(default_factory=collections.Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_bad(self, kind: str) -> None:
        with self._lock:
            self.bad_inputs[kind] += 1

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def snapshot_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        with self._lock:
            return dict(self.bad_inputs), dict(self.counters)


def _fmt_ms(p: dict[int, float] | None) -> str:
    if p is None:
        return "n/a"
    return " ".join(f"p{q}={v:.1f}" for q, v in p.items())


def _offered_rate(monitor: ReceptionMonitor) -> str:
    est = monitor.estimate()
    return "n/a" if est is None else f"{est.offered_rate_hz:.2f}"


def expert_usage_values(usage: Mapping[str, np.ndarray], moe_layers: tuple[int, ...]) -> list[KeyValue]:
    """Per task: share of tokens each expert received (all MoE layers), and per-layer counts.

    The share line shows load balance at a glance (a dead or hogging expert); per-layer counts
    let a routing regression be pinned to a block.
    """
    out = []
    for task, counts in usage.items():
        counts = np.asarray(counts, dtype=np.int64)
        total = int(counts.sum())
        shares = counts.sum(axis=0) / total if total else np.zeros(counts.shape[1])
        out.append(KeyValue(key=f"experts {task} share %",
                            value=" ".join(f"{100 * s:.1f}" for s in shares)))
        for i, layer_counts in enumerate(counts):
            block = moe_layers[i] if i < len(moe_layers) else i
            out.append(KeyValue(key=f"experts {task} block {block}",
                                value=" ".join(str(int(c)) for c in layer_counts)))
    return out


def build_status(node_name: str, level: bytes, message: str, backend: str, active_tasks: tuple[str, ...],
                 mode: str, stats: NodeStats, worker_counts: Mapping[str, int],
                 usage: Mapping[str, np.ndarray] | None = None, moe_layers: tuple[int, ...] = (),
                 counts: tuple[dict[str, int], dict[str, int]] | None = None) -> DiagnosticStatus:
    """One DiagnosticStatus with everything SPEC §5 asks for, keys stable for dashboards and tests.

    ``counts``: a ``stats.snapshot_counts()`` the caller already took (so the level it derived
    and the numbers reported come from the same instant); taken here if None.
    """
    bad, counters = counts if counts is not None else stats.snapshot_counts()
    values = [
        KeyValue(key="backend", value=backend),
        KeyValue(key="task mode", value=mode),
        KeyValue(key="active tasks", value=",".join(active_tasks) or "none"),
        KeyValue(key="input rate hz", value=f"{stats.input_rate.rate():.2f}"),
        KeyValue(key="offered rate hz", value=_offered_rate(stats.reception)),
        KeyValue(key="frames lost in transport", value=str(counters.get("lost_in_transport", 0))),
        KeyValue(key="output rate hz", value=f"{stats.output_rate.rate():.2f}"),
        KeyValue(key="latency stamp to publish ms", value=_fmt_ms(stats.stamp_to_publish_ms.percentiles())),
        KeyValue(key="latency inference ms", value=_fmt_ms(stats.inference_ms.percentiles())),
        KeyValue(key="frames received", value=str(worker_counts.get("submitted", 0))),
        KeyValue(key="frames processed", value=str(counters.get("published", 0))),
        KeyValue(key="frames dropped (queue)", value=str(worker_counts.get("dropped", 0))),
        KeyValue(key="frames skipped (no task)", value=str(counters.get("skipped_no_task", 0))),
        KeyValue(key="backend faults", value=str(counters.get("backend_faults", 0))),
        KeyValue(key="fallbacks", value=str(counters.get("fallbacks", 0))),
        KeyValue(key="bad task requests", value=str(counters.get("bad_task_requests", 0))),
        KeyValue(key="frames without camera_info (size mismatch)", value=str(counters.get("camera_info_mismatch", 0))),
        KeyValue(key="bad inputs", value=str(sum(bad.values()))),
    ]
    values += [KeyValue(key=f"bad input {kind}", value=str(n)) for kind, n in sorted(bad.items())]
    if usage:
        values += expert_usage_values(usage, moe_layers)
    return DiagnosticStatus(level=level, name=f"{node_name}: {STATUS_NAME_SUFFIX}", message=message,
                            hardware_id=backend, values=values)


def values_dict(status: DiagnosticStatus) -> dict[str, str]:
    """KeyValue list as a dict (tests and tools read diagnostics this way)."""
    return {kv.key: kv.value for kv in status.values}
