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
