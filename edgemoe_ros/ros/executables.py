# SPDX-License-Identifier: Apache-2.0
"""Console scripts ``edgemoe_node`` and ``edgemoe_multi_node``: tune the process before anything
starts a thread, then run the node.

Why a module of its own: glibc's arena cap (``allocator.ARENA_MAX``) binds only threads that take
their first arena after it is set, and ``import rclpy`` alone starts two threads that each take
one. With the cap set from ``main`` (after the node module imported rclpy) the node ran on three
arenas whatever ``ARENA_MAX`` said. This module imports nothing heavy at the top; the node modules
come after ``tune_allocator``. ``python -m edgemoe_ros.ros.executables [multi] --ros-args ...``
does the same without the console scripts.
"""

from __future__ import annotations

import sys

from ..allocator import tune_allocator


def edgemoe_node(args: list[str] | None = None) -> int:
    """``edgemoe_node``: one camera."""
    tune_allocator()
    from .node import main

    return main(args)


def edgemoe_multi_node(args: list[str] | None = None) -> int:
    """``edgemoe_multi_node``: several cameras on one accelerator."""
    tune_allocator()
    from .multi_camera_node import main

    return main(args)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "multi":
        del sys.argv[1]
        raise SystemExit(edgemoe_multi_node())
    raise SystemExit(edgemoe_node())
