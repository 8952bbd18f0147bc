# SPDX-License-Identifier: Apache-2.0
"""edgemoe_ros/ros/executables.py: the node's console scripts cap malloc arenas before rclpy
starts its threads.

Why: ``import rclpy`` starts two threads that take malloc arenas of their own. The cap
(``allocator.ARENA_MAX``) set after that import, as the nodes' ``main`` did, left three arenas
in the node. The control case shows that the check can fail."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgemoe_ros import allocator

ROOT = Path(__file__).resolve().parents[1]

# Runs the console script's function with the node module replaced by one that imports rclpy (as
# the real one does at its top) and prints glibc's count of heaps (malloc_info); with argv[1] ==
# "rclpy-first", rclpy is imported before the script runs.
_ENTRY = textwrap.dedent("""
    import ctypes, ctypes.util, sys, types
    if sys.argv[1] == "rclpy-first":
        import rclpy
    from edgemoe_ros.ros import executables
    def heaps():
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        buf, size = ctypes.c_char_p(), ctypes.c_size_t()
        libc.open_memstream.restype = ctypes.c_void_p
        fp = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
        libc.malloc_info(0, ctypes.c_void_p(fp))
        libc.fclose(ctypes.c_void_p(fp))
        return buf.value.decode().count("<heap nr=")
    def main(args=None):
        import rclpy
        import time
        time.sleep(0.5)  # rclpy's threads are up and have allocated
        return heaps()
    for name in ("node", "multi_camera_node"):
        fake = types.ModuleType("edgemoe_ros.ros." + name)
        fake.main = main
        sys.modules["edgemoe_ros.ros." + name] = fake
    print(executables.edgemoe_node(), executables.edgemoe_multi_node())
""")


def _heaps(order: str) -> list[int]:
    env_out = subprocess.run([sys.executable, "-c", _ENTRY, order], capture_output=True,
                             text=True, timeout=120, check=True, cwd=ROOT).stdout
    return [int(v) for v in env_out.split()]


@pytest.mark.skipif(allocator._glibc() is None, reason="the arena cap is glibc's")
def test_the_console_scripts_cap_arenas_before_rclpy_starts_threads():
    assert all(n <= allocator.ARENA_MAX for n in _heaps("script")), _heaps("script")
    # control: rclpy imported first keeps the arenas its threads took
    assert all(n > allocator.ARENA_MAX for n in _heaps("rclpy-first"))


def test_importing_the_scripts_module_imports_no_rclpy():
    code = ("import sys; import edgemoe_ros.ros.executables; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True, cwd=ROOT).stdout.strip()
    assert out == "[]", out


def test_setup_points_the_node_scripts_here():
    text = (ROOT / "setup.py").read_text()
    assert "edgemoe_node = edgemoe_ros.ros.executables:edgemoe_node" in text
    assert "edgemoe_multi_node = edgemoe_ros.ros.executables:edgemoe_multi_node" in text
