# SPDX-License-Identifier: Apache-2.0
"""The Ray executor of ``fleet``: ``BagWorker`` actors, one model load each, fed unit by unit.

Imported only when a run asks for Ray (``fleet.require_ray`` has checked it is installed).
Why actors and not plain tasks: an actor keeps its engine between units, so the model (weights
re-laid out, native kernels bound) is loaded once per worker, not once per bag or chunk.
Why one unit in flight per actor: the driver hands the next unit to whichever worker finishes
first, so a slow bag never holds a queue of others behind it.

Worker death (a crash, the OOM killer, a lost node) is Ray's to handle: actors restart without
limit, and a unit whose worker died is re-run up to ``max_retries`` times (``max_task_retries``);
past that the bag is reported failed and the run goes on. Errors in the data are not retried:
``BagWorker.run`` returns them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import ray
from ray.exceptions import RayActorError, RayError, RayTaskError

from ..allocator import tune_allocator
from ..blas_threads import limit_blas_threads
from .fleet import (
    BagWorker,
    FleetSummary,
    PlannedBag,
    ProcessOptions,
    Unit,
    UnitResult,
    WorkerStartError,
    record_result,
    units_longest_first,
)

log = logging.getLogger(__name__)

#: Object store of a local instance: only the model (tens of MB) and small results pass through
#: it, so Ray's default (30 % of RAM) would only take memory from the workers.
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20
#: Ray's address for "start a new local instance" (``--ray local``: Ray even for one worker).
LOCAL = "local"


class RayBagWorker(BagWorker):
    """``BagWorker`` in a Ray worker process, after the settings an executable makes first."""

    def __init__(self, weights: Any, options: ProcessOptions) -> None:
        from ..model.weights import load_weights

        tune_allocator()
        limit_blas_threads()
        super().__init__(
            load_weights(weights) if isinstance(weights, str) else _writable(weights), options
        )


def _writable(weights: Any) -> Any:
    """Arrays from Ray's object store are read-only views of shared memory; the backends may
    reuse a weight array in place, so each worker takes its own copy (tens of MB, once)."""
    from ..model.weights import ModelWeights

    tensors = {k: (v if v.flags.writeable else v.copy()) for k, v in weights.tensors.items()}
    return ModelWeights(weights.config, tensors, weights.source)


def _model_argument(weights: Any) -> Any:
    """The weights file's path when there is one (workers read it from the shared storage the bags
    are on), else the weights through the object store (in-memory models of library callers)."""
    source = weights.source
    if source and os.path.isfile(source):
        return os.path.abspath(source)
    return ray.put(weights)


def start_ray(workers: int, threads: int, address: str | None) -> tuple[bool, int]:
    """Connect to ``address``, or start a local instance with ``workers * threads`` CPUs
    (``address`` None or "local"; ``workers`` 0, the default for a cluster, means one here).

    Returns (whether this call started Ray, so it must stop it; the number of workers).
    A Ray already initialised in this process is used as it is (library callers, tests).
    """
    if ray.is_initialized():
        started = False
    elif address in (None, LOCAL):
        ray.init(
            address=LOCAL,
            num_cpus=max(1, workers) * threads,
            include_dashboard=False,
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            logging_level=logging.WARNING,
        )
        return True, max(1, workers)
    else:
        ray.init(address=address, logging_level=logging.WARNING)
        started = True
    if workers <= 0:  # a cluster's default: one worker per `threads` CPUs it has
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
    return started, workers


def run_on_ray(
    bags: Sequence[PlannedBag],
    weights: Any,
    options: ProcessOptions,
    *,
    workers: int,
    address: str | None,
    max_retries: int,
    bar: Any,
) -> FleetSummary:
    t0 = time.perf_counter()
    started, workers = start_ray(workers, options.threads, address)
    try:
        actor_cls = ray.remote(
            num_cpus=options.threads, max_restarts=-1, max_task_retries=max_retries
        )(RayBagWorker)
        model = _model_argument(weights)
        actors = [actor_cls.remote(model, options) for _ in range(workers)]
        try:
            ray.get([a.ready.remote() for a in actors])
        except RayError as exc:
            raise WorkerStartError(f"workers could not start: {_cause(exc)}") from None
        startup = time.perf_counter() - t0
        _dispatch(bags, actors, max_retries, bar)
        for a in actors:
            ray.kill(a)
    finally:
        if started:
            ray.shutdown()
    where = (
        "Ray (this process's)"
        if not started
        else f"local Ray ({os.cpu_count()} cores)"
        if address in (None, LOCAL)
        else f"Ray at {address}"
    )
    return FleetSummary([b.result for b in bags], workers, where, startup_seconds=startup)


def _dispatch(bags: Sequence[PlannedBag], actors: list[Any], max_retries: int, bar: Any) -> None:
    """Keep every actor busy with one unit until all are done; a bag's merge goes first once
    its chunks are in."""
    queue = units_longest_first(bags)
    idle = list(actors)
    running: dict[Any, tuple[Any, Unit]] = {}
    while queue or running:
        while idle and queue:
            unit = queue.pop(0)
            if bags[unit.bag].result.status == "failed":
                continue  # an earlier chunk failed: the rest of this bag is not worth doing
            actor = idle.pop()
            running[actor.run.remote(unit)] = (actor, unit)
        if not running:
            break
        [ref], _ = ray.wait(list(running), num_returns=1)
        actor, unit = running.pop(ref)
        idle.append(actor)
        try:
            res = ray.get(ref)
        except RayActorError as exc:
            res = UnitResult(error=f"worker died {max_retries + 1} time(s) on it: {_cause(exc)}")
        except RayTaskError as exc:  # a bug, not bad data: report it with the bag and go on
            res = UnitResult(error=f"worker error: {_cause(exc)}")
        if bar is not None and not unit.merge:
            bar.update(res.frames + res.skipped_frames)
        follow = record_result(bags[unit.bag], unit, res)
        if follow is not None:
            queue.insert(0, follow)


def _cause(exc: BaseException) -> str:
    """The useful line of a Ray error (its own messages carry a traceback and advice)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    text = str(exc).strip().splitlines()
    errors = [line for line in text if "Error" in line and ":" in line]
    return (errors[-1] if errors else text[-1] if text else type(exc).__name__).strip()
