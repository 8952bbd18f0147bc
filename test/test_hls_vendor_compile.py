# SPDX-License-Identifier: Apache-2.0
"""The accelerator sources compile the way the vendor flow compiles them.

``accel/hls_staging.py`` stages ``hls_accel/`` exactly as ``vitis/run_hls.tcl`` does (its file
lists and flags are read from the script) and runs ``g++ -fsyntax-only`` against the Xilinx-style
ap types of the pinned hls4ml in the venv: once as ``csim_design`` compiles (kernel and testbench,
no synthesis macro) and once as ``csynth_design`` does (kernel, ``__SYNTHESIS__`` defined).
What this does and does not check is in the module docstring: it catches calls into functions no
vendor header has, testbench code behind synthesis macros and similar breakage that the g++
C-simulation (our own stand-in headers first on the path) cannot see; it does not synthesise.
"""

from __future__ import annotations

import shutil

import pytest

from edgemoe_ros.accel import hls_staging

AP_TYPES = hls_staging.ap_types_dir()
pytestmark = [
    pytest.mark.skipif(
        AP_TYPES is None, reason="hls4ml (pinned in requirements) is not installed"
    ),
    pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found"),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return hls_staging.compile_staged(tmp_path_factory.mktemp("vendor_stage"), AP_TYPES)


def test_staging_mirrors_run_hls_tcl(tmp_path):
    project = hls_staging.read_run_hls(tmp_path / "inc")
    staged = hls_staging.stage_includes(tmp_path / "inc", project.shim_headers)
    own = {p.name for p in (hls_staging.HLS_DIR / "include").glob("*.h")}
    assert {p.name for p in staged.iterdir()} == own - set(project.shim_headers)
    assert (
        f"-I{tmp_path / 'inc'}" in project.syn_cflags
        and f"-I{tmp_path / 'inc'}" in project.tb_cflags
    )
    assert project.syn_sources and project.tb_sources


def test_every_vendor_compile_runs(results):
    """csim: every kernel and testbench source; synthesis: every kernel source."""
    project = hls_staging.read_run_hls(hls_staging.HLS_DIR)
    assert {(r.source, r.synthesis) for r in results} == (
        {(s, False) for s in (*project.syn_sources, *project.tb_sources)}
        | {(s, True) for s in project.syn_sources}
    )


@pytest.mark.parametrize("synthesis", [False, True], ids=["csim", "synthesis"])
def test_sources_compile_against_the_vendor_style_headers(results, synthesis):
    failed = [r for r in results if r.synthesis == synthesis and r.returncode != 0]
    report = "\n".join(
        f"{r.source}: {len(r.errors)} errors, first: {r.errors[:3]}" for r in failed
    )
    assert not failed, report


def test_the_check_sees_a_call_into_the_stand_ins(tmp_path):
    """A kernel that calls a function only our stand-in header has must fail the check (what
    main did before edgemoe_math.h: hls::exp2_neg existed only in our hls_math.h)."""
    hls = tmp_path / "hls_accel"
    shutil.copytree(hls_staging.HLS_DIR, hls, ignore=shutil.ignore_patterns("build"))
    math_h = hls / "include" / "edgemoe_math.h"
    math_h.write_text(math_h.read_text().replace("exp2_neg(acc_t t)", "exp2_neg_renamed(acc_t t)"))
    (hls / "include" / "hls_stream.h").write_text(
        (hls / "include" / "hls_stream.h")
        .read_text()
        .replace(
            "namespace hls {",
            "namespace hls {\nstatic inline long long exp2_neg(long long t) { return t; }",
        )
    )
    for name in ("attention.h", "moe.h"):
        path = hls / "include" / name
        path.write_text(path.read_text().replace("exp2_neg(", "hls::exp2_neg("))
    results = hls_staging.compile_staged(
        tmp_path / "work", AP_TYPES, hls_dir=hls, tcl=hls / "vitis" / "run_hls.tcl"
    )
    core = [r for r in results if r.source.endswith("edgemoe_core.cpp")]
    assert core and all(r.returncode != 0 for r in core)
    assert any("exp2_neg" in e for r in core for e in r.errors)


def test_the_check_sees_a_synthesis_only_testbench_path(tmp_path):
    hls = tmp_path / "hls_accel"
    shutil.copytree(hls_staging.HLS_DIR, hls, ignore=shutil.ignore_patterns("build"))
    tcl = hls / "vitis" / "run_hls.tcl"
    tcl.write_text(
        tcl.read_text().replace(
            'set tb_cflags "-std=c++14', 'set tb_cflags "-D__HLS_SYN__ -std=c++14'
        )
    )
    results = hls_staging.compile_staged(tmp_path / "work", AP_TYPES, hls_dir=hls, tcl=tcl)
    tb = [r for r in results if r.source.startswith("tb/")]
    assert tb and all(r.returncode != 0 for r in tb)
