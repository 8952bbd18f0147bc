# SPDX-License-Identifier: Apache-2.0
"""``edgemoe-bag process IN... --out DIR``: many bags, one output each, resumable, on Ray if asked.

What a run does, in order:

1. **Plan** (here, in the calling process): expand folders into bags, map each to ``DIR/<name>``
   (a bag directory keeps its name, a single ``.mcap``/``.db3`` file its stem), skip outputs that
   are finished (they only ever appear by a rename after success) unless ``overwrite``, discard
   partial work (``DIR/.partial-<name>``) left by an interrupted run, and read each input's
   metadata; a bag that cannot be opened is reported as failed here and the rest go on.
2. **Split**: a bag with more than ``chunk_frames`` frames is cut into equal time slices, so one
   long drive spreads over all workers instead of holding one while the others idle.
3. **Run** the units, longest bags first, on a ``BagWorker`` (the model loaded once per worker):
   in this process for one worker (no Ray), or as Ray actors (``fleet_ray``) for several or for a
   cluster. A unit's data errors come back as a result (the bag fails, nothing is retried); a
   worker process that dies is restarted and its unit retried up to ``max_retries`` times.
4. **Finish** each bag: its chunks are concatenated in time order (each chunk is itself in log-time
   order, so the output holds exactly the messages, bytes and order of a single pass), then the
   partial directory's bag is renamed to ``DIR/<name>``.

The output of every bag is the one ``process_bag`` writes for it alone, byte for byte per message.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .io import BagError, BagReader, BagWriter
from .process import process_bag

log = logging.getLogger(__name__)

#: The setup.py extra (and requirements file) that brings Ray.
FLEET_EXTRA = "fleet"
INSTALL_HINT = (
    f"pip install 'edgemoe_ros[{FLEET_EXTRA}]' (or pip install -r requirements-{FLEET_EXTRA}.txt)"
)
#: Bag files a folder may hold besides bag directories.
BAG_SUFFIXES = (".mcap", ".db3")
#: Prefix of the work directory next to an unfinished output; never a finished output's name.
PARTIAL_PREFIX = ".partial-"
#: Frames per chunk: long enough that the merge copy stays small beside inference (~30 s of 720p
#: work for one worker), short enough that one long drive spreads over the workers.
DEFAULT_CHUNK_FRAMES = 300
#: Ray retries of a unit whose worker process died.
DEFAULT_MAX_RETRIES = 2

DONE, SKIPPED, FAILED, PENDING = "done", "skipped", "failed", "pending"


class FleetError(RuntimeError):
    """A run that cannot start (no bags, two inputs with one output name, workers that fail)."""


class WorkerStartError(FleetError):
    """The workers could not load the model (bad backend or options, weights not on a node)."""


class MissingExtraError(FleetError):
    """Ray was asked for (``--workers``/``--ray``) but is not installed."""


def require_ray() -> Any:
    """The ``ray`` module, or ``MissingExtraError`` naming the extra that installs it."""
    try:
        import ray
    except ImportError as exc:
        raise MissingExtraError(
            f"--workers/--ray need Ray, which is not installed ({exc}); "
            f"install it with: {INSTALL_HINT}"
        ) from None
    return ray


def ray_available() -> bool:
    try:
        require_ray()
    except MissingExtraError:
        return False
    return True


# ----- what to do -----


@dataclass(frozen=True)
class ProcessOptions:
    """``process_bag``'s per-run settings, the same for every bag (picklable for Ray workers)."""

    topic: str | None = None
    tasks: tuple[str, ...] | None = None
    backend: str = "cpu"
    backend_options: dict[str, Any] = field(default_factory=dict)
    output_resolution: str = "input"
    resize_mode: str | None = None
    namespace: str | None = None

    @property
    def threads(self) -> int:
        """Cores one worker keeps busy (the cpu backend's ``threads`` option)."""
        threads = self.backend_options.get("threads", 1)
        return threads if isinstance(threads, int) and threads > 0 else 1


@dataclass(frozen=True)
class BagTask:
    input: Path
    output: Path

    @property
    def partial(self) -> Path:
        """Work directory of an unfinished output (chunks, then the bag renamed into place)."""
        return self.output.parent / f"{PARTIAL_PREFIX}{self.output.name}"


@dataclass(frozen=True)
class Unit:
    """One worker call: a time slice of a bag, or (``merge``) chunk bags, into ``dest``."""

    bag: int
    index: int
    input: str
    dest: str
    start_ns: int | None = None
    stop_ns: int | None = None
    merge: tuple[str, ...] = ()


@dataclass
class UnitResult:
    frames: int = 0
    skipped_frames: int = 0
    seconds: float = 0.0
    error: str | None = None


def _is_bag_dir(path: Path) -> bool:
    return (path / "metadata.yaml").exists() or any(
        p.suffix in BAG_SUFFIXES for p in path.iterdir()
    )


def find_bags(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Every bag named by ``inputs``: a bag (directory with metadata.yaml, .mcap or .db3 file) as
    given; a folder without metadata.yaml as its bags (bag directories and bag files directly in
    it, sorted; hidden entries ignored). A path that does not exist stays in the list, to be
    reported as failed with the rest of the run going on."""
    bags: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir() and not (path / "metadata.yaml").exists():
            found = sorted(
                p
                for p in path.iterdir()
                if not p.name.startswith(".")
                and ((p.is_file() and p.suffix in BAG_SUFFIXES) or (p.is_dir() and _is_bag_dir(p)))
            )
            if not found:
                raise FleetError(
                    f"{path}: a folder with no bags "
                    f"(bag directories or {'/'.join(BAG_SUFFIXES)} files)"
                )
            bags += found
        else:
            bags.append(path)
    return bags


def output_name(bag: Path) -> str:
    """A bag directory keeps its name; a single .mcap/.db3 file gives its stem (outputs are
    mcap bag directories)."""
    return bag.stem if bag.suffix in BAG_SUFFIXES else bag.name


def plan_outputs(bags: Sequence[Path], out_dir: str | os.PathLike) -> list[BagTask]:
    """One output per bag in ``out_dir``; two inputs that would share an output are an error."""
    out = Path(out_dir)
    tasks, seen = [], {}
    for bag in bags:
        name = output_name(bag)
        if name in seen:
            raise FleetError(f"{seen[name]} and {bag} would both write {out / name}; rename one")
        seen[name] = bag
        tasks.append(BagTask(bag, out / name))
    return tasks


def claim_output(task: BagTask, overwrite: bool) -> bool:
    """False if ``task.output`` is finished and stays; else clear partial work and return True."""
    if task.output.exists() and not overwrite:
        return False
    if task.partial.exists():
        log.info("discarding the partial output of an earlier run: %s", task.partial)
        shutil.rmtree(task.partial)
    task.partial.mkdir(parents=True)
    return True


def publish_output(task: BagTask) -> None:
    """Rename the finished bag into place (replacing an older output when overwriting)."""
    finished = task.partial / task.output.name
    if task.output.exists():
        old = task.partial / f"{task.output.name}.old"
        os.replace(task.output, old)
    os.replace(finished, task.output)
    shutil.rmtree(task.partial)


def chunk_bounds(
    start_ns: int, end_ns: int, frames: int, chunk_frames: int
) -> list[tuple[int | None, int | None]]:
    """[start, stop) log-time slices covering [start_ns, end_ns], about ``chunk_frames`` frames
    each for a steady camera. The first starts and the last stops unbounded, so nothing falls
    outside."""
    n = max(1, math.ceil(frames / chunk_frames))
    span = end_ns + 1 - start_ns
    cuts = [start_ns + span * i // n for i in range(1, n)]
    return list(zip([None, *cuts], [*cuts, None], strict=True))


@dataclass
class BagResult:
    input: str
    output: str
    status: str
    frames: int = 0
    skipped_frames: int = 0
    chunks: int = 0
    seconds: float = 0.0
    error: str | None = None


@dataclass
class FleetSummary:
    """What a run did, bag by bag: printed by the CLI and written by ``--json``."""

    bags: list[BagResult]
    workers: int
    executor: str
    seconds: float = 0.0
    startup_seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(b.status == status for b in self.bags)

    @property
    def frames(self) -> int:
        return sum(b.frames for b in self.bags)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "done": self.count(DONE),
            "skipped": self.count(SKIPPED),
            "failed": self.count(FAILED),
            "frames": self.frames,
            "seconds": self.seconds,
            "frames_per_s": self.frames_per_s,
            "startup_seconds": self.startup_seconds,
            "workers": self.workers,
            "executor": self.executor,
            "errors": {b.input: b.error for b in self.bags if b.error},
            "bags": [asdict(b) for b in self.bags],
        }

    def write_json(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def lines(self) -> list[str]:
        out = [
            f"{len(self.bags)} bags: {self.count(DONE)} done, {self.count(SKIPPED)} skipped, "
            f"{self.count(FAILED)} failed; {self.frames} frames in {self.seconds:.1f} s "
            f"({self.frames_per_s:.1f} frames/s, {self.workers} worker(s) on {self.executor}, "
            f"start-up {self.startup_seconds:.1f} s)"
        ]
        for b in self.bags:
            if b.status == FAILED:
                out.append(f"  FAILED {b.input}: {(b.error or '').removeprefix(b.input + ': ')}")
            elif b.status == SKIPPED:
                out.append(f"  skipped {b.input}: {b.output} exists (--overwrite to redo it)")
            else:
                out.append(
                    f"  done {b.input} -> {b.output}: {b.frames} frames"
                    + (f", {b.skipped_frames} undecodable" if b.skipped_frames else "")
                    + (f", {b.chunks} chunks" if b.chunks > 1 else "")
                )
        return out


# ----- the worker -----


class BagWorker:
    """Holds one engine and runs units with it; the same class in-process and as a Ray actor."""

    def __init__(self, weights: Any, options: ProcessOptions) -> None:
        from ..engine import Engine

        self.weights = weights
        self.options = options
        self.engine = Engine(
            weights,
            options.backend,
            options.resize_mode,
            backend_options=options.backend_options or None,
        )

    def ready(self) -> int:
        """The worker's pid, once the model is loaded (so the caller can wait for start-up)."""
        return os.getpid()

    def run(self, unit: Unit, progress: Callable[[int], Any] | None = None) -> UnitResult:
        """Process (or merge) one unit; bag, model-input and backend errors become ``error``."""
        from ..backends.base import BackendError

        start = time.perf_counter()
        # A unit's destination is its own: anything there is a dead attempt's half bag.
        shutil.rmtree(unit.dest, ignore_errors=True)
        try:
            if unit.merge:
                merge_bags(unit.merge, unit.dest)
                return UnitResult(seconds=time.perf_counter() - start)
            o = self.options
            s = process_bag(
                unit.input,
                unit.dest,
                self.weights,
                topic=o.topic,
                tasks=o.tasks,
                backend=o.backend,
                output_resolution=o.output_resolution,
                resize_mode=o.resize_mode,
                namespace=o.namespace,
                progress=progress,
                engine=self.engine,
                start_ns=unit.start_ns,
                stop_ns=unit.stop_ns,
            )
        except BagError as exc:  # its message names the bag
            return UnitResult(seconds=time.perf_counter() - start, error=str(exc))
        except (BackendError, OSError, ValueError) as exc:
            return UnitResult(
                seconds=time.perf_counter() - start, error=f"{type(exc).__name__}: {exc}"
            )
        return UnitResult(s.frames, s.skipped, s.seconds)

    def close(self) -> None:
        self.engine.close()


def merge_bags(parts: Sequence[str | os.PathLike], dest: str | os.PathLike) -> int:
    """Concatenate time-disjoint bags (given in time order) into ``dest``, then remove them.

    Each part is in log-time order and every part ends before the next begins, so the result is in
    log-time order with the parts' own order among equal stamps: that of a single pass.
    """
    n = 0
    with BagWriter(dest, "mcap") as writer:
        for part in parts:
            with BagReader(part) as reader:
                topics = [t.topic for t in reader.info().topics]
                for topic, log_time, raw in reader.raw_messages(topics):
                    writer.write_raw(
                        topic, reader.msgtype(topic), log_time, raw, reader.msgdef(topic)
                    )
                    n += 1
    for part in parts:
        shutil.rmtree(part, ignore_errors=True)
    return n


# ----- planning and bookkeeping, shared by both executors -----


@dataclass
class PlannedBag:
    task: BagTask
    result: BagResult
    units: list[Unit] = field(default_factory=list)
    pending: int = 0


def _plan(
    tasks: Sequence[BagTask], options: ProcessOptions, overwrite: bool, chunk_frames: int | None
) -> tuple[list[PlannedBag], int]:
    """Skip finished outputs, read each input's frame count and time span, cut units; total frames.

    ``chunk_frames=None`` keeps every bag whole (one worker gains nothing from chunks).
    """
    bags, total = [], 0
    for i, task in enumerate(tasks):
        b = PlannedBag(task, BagResult(str(task.input), str(task.output), PENDING))
        bags.append(b)
        if not claim_output(task, overwrite):
            b.result.status = SKIPPED
            continue
        try:
            with BagReader(task.input) as reader:
                topic = reader.pick_image_topic(options.topic)
                info = reader.info()
            frames = next(t.count for t in info.topics if t.topic == topic)
        except BagError as exc:
            _fail(b, str(exc))
            continue
        total += frames
        dest = task.partial / task.output.name
        bounds = chunk_bounds(
            info.start_ns, info.start_ns + info.duration_ns, frames, chunk_frames or frames or 1
        )
        if len(bounds) == 1:
            b.units = [Unit(i, 0, str(task.input), str(dest))]
        else:
            b.units = [
                Unit(i, k, str(task.input), str(task.partial / f"chunk-{k:05d}"), lo, hi)
                for k, (lo, hi) in enumerate(bounds)
            ]
        b.result.chunks = len(bounds)
        b.result.frames = 0
        b.pending = len(b.units)
    return bags, total


def _fail(bag: PlannedBag, error: str) -> None:
    if bag.result.status != FAILED:
        log.error(
            "%s", error if error.startswith(str(bag.task.input)) else f"{bag.task.input}: {error}"
        )
    bag.result.status = FAILED
    bag.result.error = error
    bag.pending = 0
    shutil.rmtree(bag.task.partial, ignore_errors=True)


def record_result(bag: PlannedBag, unit: Unit, res: UnitResult) -> Unit | None:
    """Account for a finished unit; returns the merge unit when the bag's last chunk is in."""
    if bag.result.status == FAILED:
        return None
    if res.error is not None:
        _fail(bag, res.error)
        return None
    bag.result.seconds += res.seconds
    if unit.merge:
        _publish(bag)
        return None
    bag.result.frames += res.frames
    bag.result.skipped_frames += res.skipped_frames
    bag.pending -= 1
    if bag.pending:
        return None
    if len(bag.units) == 1:
        _publish(bag)
        return None
    return Unit(
        unit.bag,
        len(bag.units),
        unit.input,
        str(bag.task.partial / bag.task.output.name),
        merge=tuple(u.dest for u in bag.units),
    )


def _publish(bag: PlannedBag) -> None:
    publish_output(bag.task)
    bag.result.status = DONE


def units_longest_first(bags: Sequence[PlannedBag]) -> list[Unit]:
    """Longest bags first (a short bag last leaves less idle time at the end), chunks in order."""
    order = sorted((b for b in bags if b.units), key=lambda b: -len(b.units))
    return [u for b in order for u in b.units]


# ----- running -----


def run_fleet(
    tasks: Sequence[BagTask],
    weights: Any,
    options: ProcessOptions,
    *,
    workers: int = 1,
    ray_address: str | None = None,
    overwrite: bool = False,
    max_retries: int = DEFAULT_MAX_RETRIES,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    progress: Callable[[int], Any] | None = None,
) -> FleetSummary:
    """Process every task; see the module docstring. Never raises for one bag's failure.

    ``workers=1`` without ``ray_address`` runs in this process without Ray; otherwise on Ray:
    a local instance started (and stopped) here with ``workers`` CPUs, the cluster at
    ``ray_address``, or the Ray this process already initialised (left running).
    ``progress(total_frames)`` returns a bar with ``update(n)``/``close()`` (tqdm) or is None.
    """
    use_ray = workers > 1 or ray_address is not None
    if use_ray:
        require_ray()  # before touching any output
    t0 = time.perf_counter()
    bags, total = _plan(tasks, options, overwrite, chunk_frames if use_ray else None)
    bar = progress(total) if progress else None
    try:
        if not any(b.units for b in bags):
            summary = FleetSummary([b.result for b in bags], 0, "nothing to do")
        elif use_ray:
            from .fleet_ray import run_on_ray

            summary = run_on_ray(
                bags,
                weights,
                options,
                workers=workers,
                address=ray_address,
                max_retries=max_retries,
                bar=bar,
            )
        else:
            summary = _run_here(bags, weights, options, bar)
    finally:
        if bar is not None:
            bar.close()
        for b in bags:
            if b.result.status == PENDING:  # the run stopped early (workers could not start)
                b.result.status, b.result.error = (
                    FAILED,
                    "not processed: the run stopped before it",
                )
            if (
                b.result.status == FAILED
            ):  # also chunks that were still running when their bag failed
                shutil.rmtree(b.task.partial, ignore_errors=True)
    summary.seconds = time.perf_counter() - t0
    return summary


class _Forward:
    """A ``process_bag`` progress bar that moves the whole run's bar instead."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def update(self, n: int) -> None:
        self.bar.update(n)

    def close(self) -> None:
        pass


def _run_here(
    bags: Sequence[PlannedBag], weights: Any, options: ProcessOptions, bar: Any
) -> FleetSummary:
    """One worker in this process: the single-process loop, with the model loaded once."""
    t0 = time.perf_counter()
    worker = BagWorker(weights, options)
    startup = time.perf_counter() - t0
    try:
        queue = units_longest_first(bags)
        while queue:
            unit = queue.pop(0)
            bag = bags[unit.bag]
            if bag.result.status == FAILED:
                continue
            res = worker.run(unit, (lambda _total: _Forward(bar)) if bar is not None else None)
            follow = record_result(bag, unit, res)
            if follow is not None:
                queue.insert(0, follow)
    finally:
        worker.close()
    return FleetSummary([b.result for b in bags], 1, "this process", startup_seconds=startup)


__all__ = [
    "BagTask",
    "BagWorker",
    "DEFAULT_CHUNK_FRAMES",
    "FleetError",
    "FleetSummary",
    "MissingExtraError",
    "ProcessOptions",
    "find_bags",
    "merge_bags",
    "plan_outputs",
    "require_ray",
    "run_fleet",
]
