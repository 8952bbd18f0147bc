# SPDX-License-Identifier: Apache-2.0
"""``main`` of a lifecycle node process, shared by ``edgemoe_node`` and ``edgemoe_multi_node``.

Both tune the process the same way (allocator, BLAS threads, DDS sample memory), spin a
MultiThreadedExecutor until the node's ``finished`` future (set after the shutdown transition),
Ctrl-C or an external shutdown (no traceback), log a callback's exception and keep spinning, exit
2 with a FATAL line on a bad parameter, and always destroy the node so the backend is released.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.task import Future

from ..allocator import tune_allocator
from ..blas_threads import check_blas_kernels, limit_blas_threads
from ..dds_memory import configure_dds_memory
from .guards import spin_until_done
from .params import ParameterValueError

#: Exit code of a node stopped by a bad parameter value.
EXIT_BAD_PARAMETER = 2
#: Delay between the shutdown transition and the process leaving spin, so the change_state
#: response still goes out.
EXIT_DELAY_S = 0.3


def finish_after_shutdown(
    finished: Future, make_timer: Callable[[float, Callable[[], None]], Any]
) -> None:
    """From ``on_shutdown``: complete ``finished`` (what main spins on) after EXIT_DELAY_S, once.

    ``make_timer(period_s, callback)`` creates the node's (steady-clock) timer.
    """
    timer = None

    def finish() -> None:
        timer.cancel()
        if not finished.done():
            finished.set_result(True)

    timer = make_timer(EXIT_DELAY_S, finish)


def spin_lifecycle_node(
    make_node: Callable[[], Any], name: str, args: list[str] | None = None
) -> int:
    """Run the node ``make_node()`` builds until it finishes; the process exit code."""
    tune_allocator()  # frame-sized buffers reused, not re-faulted every frame (see allocator.py)
    limit_blas_threads()  # numpy's small matmuls on one thread unless the environment says so
    check_blas_kernels()
    dds_memory = configure_dds_memory()  # DDS sample pools give memory back (dds_memory.py)
    rclpy.init(args=args)
    rclpy.logging.get_logger(name).debug(f"DDS history memory policy: {dds_memory}")
    node = None
    code = 0
    try:
        node = make_node()
        executor = MultiThreadedExecutor()
        executor.add_node(node)
        # A callback's exception is logged and spinning goes on (guards.spin_until_done).
        spin_until_done(executor, node.finished, node.get_logger().error)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ParameterValueError as exc:
        rclpy.logging.get_logger(name).fatal(str(exc))
        code = EXIT_BAD_PARAMETER
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code
