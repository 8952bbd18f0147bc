# SPDX-License-Identifier: Apache-2.0
"""What the node reports on ``/diagnostics`` and how often it logs (SPEC §5, §7).

The statistics classes are plain Python (thread-safe, unit tested without ROS); only the
functions at the end (:func:`build_status`, :func:`with_stream`) touch ``diagnostic_msgs``.
Latency is kept as percentiles over a rolling window of recent frames because a mean hides
exactly the stalls a vehicle integrator looks for. :class:`InputMonitor` judges the camera
stream as diagnostic_updater's FrequencyStatus / TimeStampStatus do (docs/ros_conventions.md,
"Diagnostics"); both nodes use it, the multi-camera node once per camera.
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
#: What our status entry reports on, after the node's name: ``edgemoe_node: inference``
#: (diagnostic_updater names a status ``<node name>: <task>``).
STATUS_NAME_SUFFIX = "inference"
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


#: Defaults of the input-stream parameters (params.py), as diagnostic_updater's FrequencyStatusParam
#: (tolerance 0.1, a window of 5 one-second updates) and TimeStampStatusParam (5 s) choose them.
#: 0 Hz expected = unknown: the rate is learned from the stream.
DEFAULT_EXPECTED_RATE_HZ = 0.0
DEFAULT_RATE_TOLERANCE = 0.1
DEFAULT_RATE_WINDOW_S = 5.0
#: No frame for this long is ERROR: two windows, so a stopped stream is WARN first.
DEFAULT_INPUT_TIMEOUT_S = 10.0
#: A rate is learned only from a stream that kept coming for this share of the window, with at
#: least this many frames: a few frames published by hand teach nothing and alarm nothing.
LEARN_SPAN_FRACTION = 0.5
LEARN_MIN_FRAMES = 4
#: Status levels as plain ints (DiagnosticStatus.OK/WARN/ERROR are bytes); ``level_byte`` converts.
OK, WARN, ERROR = 0, 1, 2


def level_byte(level: int) -> bytes:
    """A plain level as ``DiagnosticStatus.level`` wants it."""
    return bytes([level])


@dataclass(frozen=True)
class StreamLimits:
    """When an input stream counts as healthy (parameters expected_input_rate,
    input_rate_tolerance, input_rate_window, input_timeout)."""

    expected_hz: float = DEFAULT_EXPECTED_RATE_HZ
    tolerance: float = DEFAULT_RATE_TOLERANCE
    window_s: float = DEFAULT_RATE_WINDOW_S
    timeout_s: float = DEFAULT_INPUT_TIMEOUT_S


@dataclass(frozen=True)
class StreamCheck:
    """The input stream's level, what is wrong with it (one sentence per problem), and figures."""

    level: int
    problems: tuple[str, ...]
    values: tuple[tuple[str, str], ...]


class InputMonitor:
    """Is a camera stream coming at the rate it should, with its camera_info?

    diagnostic_updater's semantics (``FrequencyStatus`` + ``TimeStampStatus``), our own code:

    * **WARN** when the frame rate over the last ``window_s`` seconds falls below
      ``min = expected_hz * (1 - tolerance)``. With ``expected_hz`` 0 (unknown) the expected rate
      is *learned*: the mean arrival rate of a stream that kept coming for half a window, held
      when the stream stops. Before a rate is known, a whole window without a frame is WARN.
    * **ERROR** when no frame arrived for ``timeout_s`` seconds (FrequencyStatus: "no events").
    * **WARN** when frames arrive for a whole window but no camera_info came (the node then
      relays no calibration, and metric depth uses the model's canonical camera).

    Rate: (frames - 1) / their span, which is exact for a steady stream at any rate (no
    quantisation to whole frames per window, so a slow camera does not flap); the time since the
    last frame counts against it only beyond the longest acceptable interval ``1 / min``. So a
    stream that stops turns WARN after about ``tolerance * window_s`` seconds, ERROR after
    ``timeout_s``.

    Nothing is judged while not ``watching`` (node inactive, no task enabled): checking starts
    (is *armed*) on the first report that watches, and the rate is judged once a whole window
    has passed since then, so activation never starts with a false alarm. Arrival times are
    monotonic host time: a bag's or a simulator's stamps do not matter.
    """

    def __init__(self, limits: StreamLimits = StreamLimits(), clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._clock = clock
        self._arrivals: collections.deque[float] = collections.deque()
        self._last: float | None = None
        self._learned_hz: float | None = None
        self._armed_at: float | None = None
        self._info_missing_since: float | None = None
        self._lock = threading.Lock()

    @property
    def limits(self) -> StreamLimits:
        return self._limits

    def set_limits(self, limits: StreamLimits) -> None:
        """New parameters, from the next report on (the arrivals kept are reused)."""
        with self._lock:
            self._limits = limits

    def tick(self) -> None:
        """A frame arrived (good or bad: the stream is alive either way)."""
        now = self._clock()
        with self._lock:
            self._arrivals.append(now)
            self._last = now
            self._prune(now)

    def rate(self) -> float:
        """Frames per second over the window (0.0 with fewer than two)."""
        now = self._clock()
        with self._lock:
            self._prune(now)
            return self._rate(now, self._min_hz())

    def check(self, watching: bool, has_camera_info: bool = True, depth_active: bool = False) -> StreamCheck:
        """The stream's level now; ``watching``: the node is active with a task enabled."""
        now = self._clock()
        with self._lock:
            self._prune(now)
            self._learn()
            min_hz = self._min_hz()
            rate = self._rate(now, min_hz)
            values = self._values(now, rate, min_hz, has_camera_info)
            if not watching:
                self._armed_at = self._info_missing_since = None
                return StreamCheck(OK, (), values)
            if self._armed_at is None:
                self._armed_at = now
            problems = [p for p in (self._stream_problem(now, rate, min_hz),
                                    self._info_problem(now, has_camera_info, depth_active)) if p]
        level = max((lvl for lvl, _ in problems), default=OK)
        ordered = sorted(problems, key=lambda p: -p[0])
        return StreamCheck(level, tuple(msg for _, msg in ordered), values)

    # ----- internals (called with the lock held) -----
    def _prune(self, now: float) -> None:
        while self._arrivals and now - self._arrivals[0] > self._limits.window_s:
            self._arrivals.popleft()

    def _span(self) -> float:
        return self._arrivals[-1] - self._arrivals[0] if len(self._arrivals) >= 2 else 0.0

    def _learn(self) -> None:
        span = self._span()
        if len(self._arrivals) >= LEARN_MIN_FRAMES and span >= LEARN_SPAN_FRACTION * self._limits.window_s:
            self._learned_hz = (len(self._arrivals) - 1) / span

    def _reference_hz(self) -> float | None:
        """The rate the stream should have: the expected one, else the learned one, else None."""
        return self._limits.expected_hz if self._limits.expected_hz > 0 else self._learned_hz

    def _min_hz(self) -> float:
        ref = self._reference_hz()
        return 0.0 if ref is None else ref * (1.0 - self._limits.tolerance)

    def _rate(self, now: float, min_hz: float) -> float:
        n = len(self._arrivals)
        if n < 2:
            return 0.0
        span = self._span()
        # The open interval since the last frame counts only beyond the longest acceptable one
        # (1 / min; without a minimum, the stream's own mean interval).
        allowance = 1.0 / min_hz if min_hz > 0 else span / (n - 1)
        return (n - 1) / max(span, now - self._arrivals[0] - allowance, 1e-9)

    def _silence(self, now: float) -> float:
        """Seconds without a frame: since the last one, or since checking started if later."""
        assert self._armed_at is not None
        return now - (self._armed_at if self._last is None else max(self._armed_at, self._last))

    def _stream_problem(self, now: float, rate: float, min_hz: float) -> tuple[int, str] | None:
        lim = self._limits
        silence = self._silence(now)
        if silence > lim.timeout_s:
            return ERROR, f"input stale: no frame for {silence:.1f} s (input_timeout {lim.timeout_s:g} s)"
        assert self._armed_at is not None
        if now - self._armed_at < lim.window_s:
            return None  # a whole window since checking started before the rate is judged
        # One frame after a pause measures no rate yet: judge it once the next one is late.
        restarting = len(self._arrivals) < 2 and silence <= 1.0 / max(min_hz, 1e-9)
        if min_hz > 0 and rate < min_hz and not restarting:
            ref = self._reference_hz()
            how = "expected" if lim.expected_hz > 0 else "learned"
            return WARN, (f"input rate {rate:.2f} Hz below the minimum {min_hz:.2f} Hz ({how} {ref:.2f} Hz "
                          f"- {100 * lim.tolerance:g} %) over the last {lim.window_s:g} s")
        if min_hz == 0 and silence >= lim.window_s:
            return WARN, f"input stale: no frame for {silence:.1f} s"
        return None

    def _info_problem(self, now: float, has_camera_info: bool, depth_active: bool) -> tuple[int, str] | None:
        frames_arriving = self._last is not None and now - self._last <= self._limits.window_s
        if has_camera_info or not frames_arriving:
            self._info_missing_since = None
            return None
        if self._info_missing_since is None:
            self._info_missing_since = now
        missing = now - self._info_missing_since
        if missing < self._limits.window_s:
            return None
        effect = ("depth is in metres of the model's default camera, not of this lens" if depth_active
                  else "outputs are published without camera_info")
        return WARN, f"no camera_info received while frames arrive ({missing:.1f} s): {effect}"

    def _values(self, now: float, rate: float, min_hz: float, has_camera_info: bool) -> tuple[tuple[str, str], ...]:
        lim = self._limits
        if lim.expected_hz > 0:
            expected = f"{lim.expected_hz:.2f}"
        else:
            expected = "unknown" if self._learned_hz is None else f"learned {self._learned_hz:.2f}"
        since = "never" if self._last is None else f"{now - self._last:.2f}"
        return (("input rate hz", f"{rate:.2f}"),
                ("expected input rate hz", expected),
                ("minimum input rate hz", f"{min_hz:.2f}" if min_hz > 0 else "n/a"),
                ("input rate window s", f"{lim.window_s:g}"),
                ("seconds since last frame", since),
                ("camera_info received", "yes" if has_camera_info else "no"))


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

    input_rate: InputMonitor = field(default_factory=InputMonitor)
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


def status_prefix(name: str, fully_qualified_name: str, use_fqn: bool) -> str:
    """``<node name>`` of ``<node name>: <what>``, as diagnostic_updater names a status: the plain
    node name, or with ``use_fqn`` the fully qualified one without its leading slash (the
    aggregator turns every '/' of a status name into a space, so a leading one would lead)."""
    return fully_qualified_name.lstrip("/") if use_fqn else name


def with_stream(level: bytes, message: str, stream: StreamCheck) -> tuple[bytes, str]:
    """The node's own level/message merged with its input stream's: the worst level, every
    problem said (as diagnostic_updater's CompositeDiagnosticTask merges tasks). ``message`` is
    the bare lifecycle state when ``level`` is OK."""
    if not stream.problems:
        return level, message
    text = "; ".join(stream.problems)
    merged = level_byte(max(level[0], stream.level))
    return merged, f"{message}: {text}" if level == DiagnosticStatus.OK else f"{message}; {text}"


def build_status(node_name: str, level: bytes, message: str, backend: str, active_tasks: tuple[str, ...],
                 mode: str, stats: NodeStats, worker_counts: Mapping[str, int],
                 usage: Mapping[str, np.ndarray] | None = None, moe_layers: tuple[int, ...] = (),
                 counts: tuple[dict[str, int], dict[str, int]] | None = None,
                 stream: StreamCheck | None = None, hardware_id: str = "") -> DiagnosticStatus:
    """One DiagnosticStatus with everything SPEC §5 asks for, keys stable for dashboards and tests.

    ``node_name``: the status name's prefix (:func:`status_prefix`). ``counts``: a
    ``stats.snapshot_counts()`` the caller already took (so the level it derived and the numbers
    reported come from the same instant); taken here if None. ``stream``: the input stream's
    check the level came from (its figures are reported). ``hardware_id``: the device
    (hardware_id.py); the backend's name if ''.
    """
    bad, counters = counts if counts is not None else stats.snapshot_counts()
    stream_values = (stream.values if stream is not None
                     else (("input rate hz", f"{stats.input_rate.rate():.2f}"),))
    values = [
        KeyValue(key="backend", value=backend),
        KeyValue(key="task mode", value=mode),
        KeyValue(key="active tasks", value=",".join(active_tasks) or "none"),
        *(KeyValue(key=k, value=v) for k, v in stream_values),
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
                            hardware_id=hardware_id or backend, values=values)


def values_dict(status: DiagnosticStatus) -> dict[str, str]:
    """KeyValue list as a dict (tests and tools read diagnostics this way)."""
    return {kv.key: kv.value for kv in status.values}
