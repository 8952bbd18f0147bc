# SPDX-License-Identifier: Apache-2.0
"""``edgemoe_node`` with one extra backend, ``faulty``, for testing run-time backend faults.

Run as a script (it is the node's executable in the fault tests): it registers the backend, then
calls the real ``main``. ``faulty`` is the cpu backend, except that while ``trigger_file`` exists
every ``run`` raises ``BackendError`` the way an FPGA timeout does. ``crash_once`` kills its
process once instead (the fleet tests' dying worker). ``fpga_host`` is the ``fpga`` backend on a
simulated board that computes at cpu speed, its faults (hang, bad status, corrupt output) injected
at ap_start from a file (test/host_hardware.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgemoe_ros.backends import BACKENDS, BackboneResult, Backend, BackendError, create_backend
from edgemoe_ros.model.weights import ModelWeights

FAULTY = "faulty"
CRASH_ONCE = "crash_once"
#: test/host_hardware.py's backend (not imported here: it needs pynq).
FPGA_HOST = "fpga_host"
#: Exit status of a process ``CrashOnceBackend`` kills.
EXIT_CRASH = 70


class FaultyBackend(Backend):
    """cpu backend that fails on demand (while ``trigger_file`` exists)."""

    name = FAULTY

    def __init__(self, trigger_file: str) -> None:
        super().__init__()
        self._trigger = Path(trigger_file)
        self._inner = create_backend("cpu")

    def load(self, weights: ModelWeights) -> None:
        self._inner.load(weights)
        self.config = weights.config

    def run(self, images: np.ndarray, tasks: Sequence[str]) -> BackboneResult:
        if self._trigger.exists():
            raise BackendError(f"simulated device timeout ({self._trigger} exists)")
        return self._inner.run(images, tasks)

    def close(self) -> None:
        self._inner.close()


class CrashOnceBackend(FaultyBackend):
    """cpu backend whose process dies (no exception, no cleanup: a segfault or the OOM killer)
    on the first ``run`` after ``trigger_file`` appears; it removes the file first, so a retry
    succeeds."""

    name = CRASH_ONCE

    def run(self, images: np.ndarray, tasks: Sequence[str]) -> BackboneResult:
        try:
            self._trigger.unlink()
        except FileNotFoundError:
            return self._inner.run(images, tasks)
        os._exit(EXIT_CRASH)


def register() -> None:
    """Add the fault backends to the registry (in this process; Ray workers run it as their
    setup hook)."""
    module = __name__ if __name__ != "__main__" else "fault_injection"
    BACKENDS[FAULTY] = f"{module}:FaultyBackend"
    BACKENDS[CRASH_ONCE] = f"{module}:CrashOnceBackend"
    BACKENDS[FPGA_HOST] = "host_hardware:HostFpgaBackend"  # imported (pynq) only when created


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    register()
    from edgemoe_ros.ros.executables import edgemoe_node

    sys.exit(edgemoe_node())
