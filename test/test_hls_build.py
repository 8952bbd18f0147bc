# SPDX-License-Identifier: Apache-2.0
"""hls_accel/ builds with plain g++, its testbench compares (and fails on wrong data), and the
kernel runs clean under AddressSanitizer + UBSan."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgemoe_ros.accel import interface as itf
from edgemoe_ros.backends.csim import HLS_DIR, LIB_NAME, build_artifact
from edgemoe_ros.fixedpoint.emulator import FixedPointEmulator
from edgemoe_ros.fixedpoint.testbench_io import write_case
from edgemoe_ros.model.config import ModelConfig, tiny_config
from edgemoe_ros.model.weights import random_init

# Small, and deliberately unaligned: dims that are not multiples of the 16-wide tile, and a router
# whose second task starts mid-beat, so the sanitizer also watches the masked wide reads.
CFG = tiny_config(dim=21, num_heads=3, mlp_hidden=42, num_experts=5, expert_hidden=20)


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory) -> Path:
    w = random_init(CFG, seed=21)
    packed = itf.pack_weights(w)
    images = np.random.default_rng(3).integers(
        0, 256, (2, CFG.img_h, CFG.img_w, 3), dtype=np.uint8
    )
    assert (CFG.num_experts * CFG.dim) % itf.WORDS_PER_BEAT != 0  # task 1's router is unaligned
    out = FixedPointEmulator(packed, CFG).run(images, [1])[1]
    return write_case(
        tmp_path_factory.mktemp("tbcase"), CFG, packed, images, 1, out.features, out.routing
    )


def _run(exe: Path, case: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), str(case)], capture_output=True, text=True, timeout=300)


def test_library_and_testbench_build_without_warnings():
    lib = build_artifact(CFG, LIB_NAME)
    tb = build_artifact(CFG, "testbench")
    assert lib.stat().st_size > 0 and tb.stat().st_size > 0
    # A forced recompile of the kernel must be warning-free with -Wall -Wextra.
    gen = lib.parent / "include"
    proc = subprocess.run(
        [
            "make",
            "-C",
            str(HLS_DIR),
            "-B",
            f"BUILD={lib.parent}",
            f"GEN_DIR={gen}",
            str(lib.parent / "testbench"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "warning" not in proc.stderr.lower(), proc.stderr[-2000:]


def test_testbench_passes_on_correct_data(case_dir):
    """The testbench is the build Vitis compiles (exact-width ap types, not the library's native
    int64), so this is the emulator comparison of the exact-width datapath."""
    proc = _run(build_artifact(CFG, "testbench"), case_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS" in proc.stdout and "0/" in proc.stdout
    assert "datapath exact-width ap types" in proc.stdout


@pytest.mark.slow
def test_exact_width_testbench_matches_the_emulator_on_the_spec_model(tmp_path):
    """The full-size model through the ap-type datapath (about a minute per image)."""
    cfg = ModelConfig()
    packed = itf.pack_weights(random_init(cfg, seed=7))
    images = np.random.default_rng(7).integers(
        0, 256, (1, cfg.img_h, cfg.img_w, 3), dtype=np.uint8
    )
    out = FixedPointEmulator(packed, cfg).run(images, [1])[1]
    case = write_case(tmp_path / "spec", cfg, packed, images, 1, out.features, out.routing)
    proc = _run(build_artifact(cfg, "testbench"), case)
    assert proc.returncode == 0 and "datapath exact-width ap types" in proc.stdout, (
        proc.stdout + proc.stderr
    )


@pytest.mark.parametrize(
    "target,word", [("expected_features.bin", np.int32), ("expected_routing.bin", np.int32)]
)
def test_testbench_fails_on_corrupted_expectation(case_dir, tmp_path, target, word):
    bad = tmp_path / "case"
    bad.mkdir()
    for f in case_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    data = np.fromfile(bad / target, dtype=word)
    data[len(data) // 2] ^= 1  # one flipped bit
    data.tofile(bad / target)
    proc = _run(build_artifact(CFG, "testbench"), bad)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL" in proc.stdout and "1/" in proc.stdout


def test_testbench_rejects_truncated_input(case_dir, tmp_path):
    bad = tmp_path / "case"
    bad.mkdir()
    for f in case_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "weights_experts.bin").write_bytes((case_dir / "weights_experts.bin").read_bytes()[:-2])
    proc = _run(build_artifact(CFG, "testbench"), bad)
    assert proc.returncode == 2 and "weights_experts.bin" in proc.stderr


def test_sanitizer_build_runs_clean(case_dir):
    exe = build_artifact(CFG, "asan/testbench")
    proc = _run(exe, case_dir)
    report = proc.stdout + proc.stderr
    assert "runtime error" not in report and "AddressSanitizer" not in report, report[-3000:]
    assert proc.returncode == 0, report[-3000:]
