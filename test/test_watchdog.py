# SPDX-License-Identifier: Apache-2.0
"""The backend-call watchdog (ros/watchdog.py): time limit, abandoned calls, deferred close."""

import threading

import pytest
from ros_testing import wait_until

from edgemoe_ros.ros.watchdog import BackendHung, Watchdog


def test_results_and_errors_pass_through_on_one_reused_thread():
    dog = Watchdog("x")
    threads = {dog.call(5.0, threading.get_ident) for _ in range(5)}
    assert len(threads) == 1 and threading.get_ident() not in threads  # one runner, not the caller
    with pytest.raises(ZeroDivisionError):
        dog.call(5.0, lambda: 1 / 0)
    assert dog.call(5.0, lambda a, b=0: a + b, 2, b=3) == 5
    dog.close()


def test_an_overrun_is_abandoned_refuses_further_calls_and_defers_close():
    dog = Watchdog("fpga")
    release = threading.Event()
    with pytest.raises(BackendHung, match="did not return within 0.2 s"):
        dog.call(0.2, release.wait, 60)
    assert dog.hung_for() is not None
    with pytest.raises(BackendHung, match="still has not returned"):
        dog.call(5.0, lambda: 1)
    closed = []
    assert not dog.when_idle(lambda: closed.append(True))  # not under the running call
    assert not closed
    release.set()
    wait_until(lambda: closed == [True], 10.0, "the deferred close")
    # usable again once it returned
    assert dog.hung_for() is None and dog.call(5.0, lambda: 7) == 7

    assert dog.when_idle(lambda: closed.append(True)) and closed == [True, True]
    dog.close()
    with pytest.raises(BackendHung, match="closed"):
        dog.call(5.0, lambda: 1)


class _Model:
    """Stands in for a model a frame's call refers to (weights, packed matrices)."""


def _no_cyclic_gc(test):
    """Run ``test`` with the cyclic garbage collector off: what it checks is freed must be freed
    by reference counting, at once, not at some later full collection."""
    import functools
    import gc

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        enabled = gc.isenabled()
        gc.disable()
        try:
            return test(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    return wrapper


@_no_cyclic_gc
def test_a_failed_call_keeps_nothing_it_touched_alive():
    """A backend error's traceback holds the frames of the call (the engine's, with the model it
    ran). The watchdog raised it from a dict in its own frame: a reference cycle, so after a fault
    the old model outlived the next reload until a full collection, after the reload's
    malloc_trim, and the node's RSS grew per fault (bench/soak.py)."""
    import weakref

    dog = Watchdog("fpga")

    def fail(model: _Model) -> None:
        raise RuntimeError(f"device error with {model!r}")

    model = _Model()
    alive = weakref.ref(model)
    with pytest.raises(RuntimeError, match="device error"):
        dog.call(5.0, fail, model)
    del model
    assert alive() is None
    dog.close()


@_no_cyclic_gc
def test_the_runner_forgets_a_call_once_it_returned():
    """The runner thread waits for the next call; meanwhile it must not hold the last one's
    arguments (after a fault the primary gets no call until a reload: its last frame's model and
    images stayed referenced through the reload)."""
    import weakref

    dog = Watchdog("cpu")
    model = _Model()
    alive = weakref.ref(model)
    assert dog.call(5.0, lambda m: 1, model) == 1
    del model
    wait_until(lambda: alive() is None, 5.0, "the runner to drop the call")
    dog.close()
