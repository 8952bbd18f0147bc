# SPDX-License-Identifier: Apache-2.0
"""Child processes shared by the ROS bench scripts (bench_node, bench_multicam): one way to stop
a node or sink process, so every bench lets ROS shut down cleanly before it kills."""

from __future__ import annotations

import signal
import subprocess


def stop_process(proc: subprocess.Popen, timeout_s: float) -> None:
    """SIGINT (the node's clean shutdown); SIGKILL if it still runs after ``timeout_s``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
