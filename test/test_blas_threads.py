# SPDX-License-Identifier: Apache-2.0
"""blas_threads: the executables put numpy's OpenBLAS on one thread unless the environment names a
count. Each case runs in a fresh interpreter: the setting is process-wide and read at load."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = (
    "from edgemoe_ros.blas_threads import blas_threads, limit_blas_threads; "
    "before = blas_threads(); done = limit_blas_threads(); print(before, done, blas_threads())"
)


def _run(env_extra: dict[str, str], code: str = PROBE) -> list[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
    }
    env.update(env_extra, HOME=env.get("HOME", "/tmp"))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_one_thread_unless_the_environment_says():
    before, done, after = _run({})
    if before == "None":
        pytest.skip("numpy here does not use an OpenBLAS whose thread count can be read")
    assert (done, after) == ("True", "1")
    assert _run({"OPENBLAS_NUM_THREADS": "2"}) == ["2", "False", "2"]  # the user's choice stays
    before, done, after = _run({"OMP_NUM_THREADS": "2"})
    assert done == "False" and after == before


def test_an_executable_leaves_blas_on_one_thread(tmp_path):
    """edgemoe-infer's main, run on an image in a fresh interpreter: BLAS is on one thread after
    it."""
    import cv2
    import numpy as np

    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    code = (
        "from edgemoe_ros.blas_threads import blas_threads; from edgemoe_ros.cli.infer import "
        "main; "
        f"rc = main([{str(image)!r}, '--out', {str(tmp_path / 'out')!r}]); print(rc, "
        "blas_threads())"
    )
    *_, rc, threads = _run({}, code)  # after whatever main printed
    assert rc == "0"
    if threads != "None":
        assert threads == "1"
    assert any((tmp_path / "out").iterdir())


def test_every_executable_calls_it_at_start():
    """The other console scripts' mains set it next to the allocator tuning too (running them needs
    ROS, bags or a drive; their own tests do that)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "edgemoe_ros"

    def sets_it(text: str) -> bool:
        return (
            "limit_blas_threads()" in text
            and "check_blas_kernels()" in text
            and "tune_allocator()" in text
        )

    shared_start = (root / "cli/__init__.py").read_text()
    assert sets_it(shared_start.split("def run_engine_tool", 1)[1]), "cli.run_engine_tool"
    spin = (root / "ros/spin.py").read_text()
    assert sets_it(spin.split("def spin_lifecycle_node", 1)[1]), "ros.spin.spin_lifecycle_node"
    for rel in ("bag/cli.py", "demo.py"):
        assert sets_it((root / rel).read_text()), rel
    for rel in ("cli/infer.py", "cli/eval.py"):  # through the shared start of the engine tools
        assert "run_engine_tool(" in (root / rel).read_text(), rel
    for rel in ("ros/node.py", "ros/multi_camera_node.py"):  # through the nodes' shared main
        assert "spin_lifecycle_node(" in (root / rel).read_text(), rel


@pytest.mark.parametrize(
    ("core", "flags", "env", "want"),
    [
        ("Prescott", {"sse3", "avx2", "avx512f"}, {}, "OPENBLAS_CORETYPE=SkylakeX"),
        ("Prescott", {"sse3", "avx2"}, {}, "OPENBLAS_CORETYPE=Haswell"),
        ("Prescott", {"sse3"}, {}, None),  # a CPU that old: generic kernels are right
        ("SkylakeX", {"avx2", "avx512f"}, {}, None),  # recognised
        ("Prescott", {"avx2"}, {"OPENBLAS_CORETYPE": "Prescott"}, None),  # the user chose it
    ],
)
def test_generic_blas_kernels_on_a_modern_cpu_are_reported(
    monkeypatch, caplog, core, flags, env, want
):
    from edgemoe_ros import blas_threads as bt

    monkeypatch.setattr(bt, "blas_core", lambda: core)
    monkeypatch.setattr(bt, "_cpu_flags", lambda: flags)
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with caplog.at_level("WARNING", logger="edgemoe_ros.blas_threads"):
        advice = bt.check_blas_kernels()
    if want is None:
        assert advice is None and not caplog.records
    else:
        assert want in advice and caplog.records and want in caplog.records[0].getMessage()


def test_blas_core_names_the_loaded_kernels():
    from edgemoe_ros.blas_threads import blas_core

    core = blas_core()
    if core is None:
        pytest.skip("numpy here does not use an OpenBLAS that names its kernels")
    assert core and core.isprintable()
    # Read at load from the environment: a fresh interpreter told a kernel set reports that one.
    assert _run(
        {"OPENBLAS_CORETYPE": "Haswell"},
        "from edgemoe_ros.blas_threads import blas_core; print(blas_core())",
    ) == ["Haswell"]
