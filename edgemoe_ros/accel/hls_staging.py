# SPDX-License-Identifier: Apache-2.0
"""Stage ``hls_accel/`` for the vendor tools exactly as ``vitis/run_hls.tcl`` does, and compile the
staged sources against Xilinx-style headers without the vendor tools.

Why: the g++ C-simulation (``make -C hls_accel``) puts our clean-room ``hls_stream.h`` and
``hls_vector.h`` first on the include path; Vitis HLS uses its own headers instead, so code that
only compiles against our stand-ins (a function that exists in no vendor header, a synthesis-only
path in the testbench) passes every C-simulation test and still fails ``csim_design``. This module
reproduces the vendor build's view of the sources:

* the file lists and compiler flags are *read from* ``run_hls.tcl`` (``syn_sources``,
  ``tb_sources``, ``shim_headers``, ``syn_cflags``, ``tb_cflags``), so the check and the script
  cannot disagree;
* the staging mirrors the tcl: every ``include/*.h`` except the ``shim_headers``;
* the Xilinx-style ``ap_int.h``/``ap_fixed.h``/``hls_stream.h``/``hls_math.h`` come from the pinned
  hls4ml in the venv (``templates/vivado/ap_types``), found with ``importlib.util.find_spec``
  (hls4ml is never imported) and never copied into the repository.

Two compiles, as the vendor flow does them:

* **csim** (``csim_design``, cosim's testbench): kernel and testbench, no synthesis macro;
* **synthesis** (``csynth_design``): kernel sources only, with ``__SYNTHESIS__`` defined.

What is *not* checked (said plainly): hls4ml's ``ap_common.h`` refuses ``__SYNTHESIS__`` (its
ap types are simulation-only), so in the synthesis compile a generated shim includes the ap types
with the macro hidden: our code sees ``__SYNTHESIS__``, the ap types are their simulation form.
hls4ml ships no ``hls_vector.h``: both compiles use our clean-room one (only element access and
``+=``, a subset of the vendor class), so ``hls::vector`` usage is not checked against the vendor
header. Pragmas are ignored by g++; nothing here schedules, binds or synthesises.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

HLS_DIR = Path(__file__).resolve().parents[2] / "hls_accel"
RUN_HLS_TCL = HLS_DIR / "vitis" / "run_hls.tcl"
#: The ap types shipped with hls4ml, relative to its package directory.
AP_TYPES_SUBDIR = Path("templates") / "vivado" / "ap_types"
#: The header hls4ml lacks and the check takes from our clean-room stand-ins.
NOT_IN_HLS4ML = ("hls_vector.h",)
_AP_HEADERS = ("ap_int.h", "ap_fixed.h")


@dataclass(frozen=True)
class HlsProject:
    """What ``run_hls.tcl`` hands to Vitis HLS (paths relative to ``hls_accel/``)."""

    syn_sources: tuple[str, ...]
    tb_sources: tuple[str, ...]
    shim_headers: tuple[str, ...]
    syn_cflags: tuple[str, ...]  # with the staged include dir substituted for $inc_dir
    tb_cflags: tuple[str, ...]


@dataclass(frozen=True)
class CompileResult:
    """One g++ -fsyntax-only run of one source."""

    source: str
    synthesis: bool
    returncode: int
    errors: tuple[str, ...]  # the compiler's "error:" lines


def _tcl_value(text: str, name: str) -> str:
    m = re.search(rf"^set\s+{name}\s+(\{{[^}}]*\}}|\"[^\"]*\"|\S+)", text, re.M)
    if not m:
        raise ValueError(f"{RUN_HLS_TCL.name}: no 'set {name} ...'")
    return m.group(1)[1:-1] if m.group(1)[0] in '{"' else m.group(1)


def read_run_hls(inc_dir: Path, path: Path = RUN_HLS_TCL) -> HlsProject:
    """The file lists and flags of ``run_hls.tcl``, with ``$inc_dir`` set to ``inc_dir``."""
    text = path.read_text()

    def flags(name: str) -> tuple[str, ...]:
        if not re.search(rf"^set\s+{name}\s", text, re.M):  # older scripts: one "cflags" for both
            name = "cflags"
        return tuple(_tcl_value(text, name).replace("$inc_dir", str(inc_dir)).split())

    return HlsProject(
        syn_sources=tuple(_tcl_value(text, "syn_sources").split()),
        tb_sources=tuple(_tcl_value(text, "tb_sources").split()),
        shim_headers=tuple(_tcl_value(text, "shim_headers").split()),
        syn_cflags=flags("syn_cflags"),
        tb_cflags=flags("tb_cflags"),
    )


def stage_includes(dest: Path, shim_headers: tuple[str, ...], hls_dir: Path = HLS_DIR) -> Path:
    """``include/*.h`` without the shims into ``dest`` (run_hls.tcl's staging loop)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for header in sorted((hls_dir / "include").glob("*.h")):
        if header.name not in shim_headers:
            shutil.copy2(header, dest / header.name)
    return dest


def ap_types_dir() -> Path | None:
    """hls4ml's Xilinx-style ap types directory here (None when hls4ml is absent)."""
    spec = importlib.util.find_spec("hls4ml")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / AP_TYPES_SUBDIR
    return path if (path / "ap_fixed.h").is_file() else None


def write_shims(dest: Path, synthesis: bool, hls_dir: Path = HLS_DIR) -> Path:
    """The check's own include dir: hls_vector.h (absent from hls4ml) and, for the synthesis
    compile, ap type wrappers hiding ``__SYNTHESIS__`` from hls4ml's simulation-only ap types."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in NOT_IN_HLS4ML:
        shutil.copy2(hls_dir / "include" / name, dest / name)
    if synthesis:
        for name in _AP_HEADERS:
            (dest / name).write_text(
                "// compile-check shim: hls4ml's ap types are simulation-only"
                " and #error on __SYNTHESIS__\n"
                '#pragma push_macro("__SYNTHESIS__")\n#undef __SYNTHESIS__\n'
                f'#include_next <{name}>\n#pragma pop_macro("__SYNTHESIS__")\n'
            )
    return dest


def compile_staged(
    workdir: Path,
    ap_types: Path,
    cxx: str = "g++",
    hls_dir: Path = HLS_DIR,
    tcl: Path = RUN_HLS_TCL,
) -> list[CompileResult]:
    """Stage as run_hls.tcl does and syntax-check every source the vendor flow compiles."""
    inc = workdir / "include"
    project = read_run_hls(inc, tcl)
    stage_includes(inc, project.shim_headers, hls_dir)
    results = []
    for synthesis in (False, True):
        shims = write_shims(
            workdir / ("shim_syn" if synthesis else "shim_csim"), synthesis, hls_dir
        )
        jobs = [(s, project.syn_cflags) for s in project.syn_sources]
        if not synthesis:
            jobs += [(s, project.tb_cflags) for s in project.tb_sources]
        for source, cflags in jobs:
            cmd = [
                cxx,
                "-fsyntax-only",
                *cflags,
                *(["-D__SYNTHESIS__"] if synthesis else []),
                f"-I{shims}",
                "-isystem",
                str(ap_types),
                str(hls_dir / source),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            errors = tuple(
                line for line in proc.stderr.splitlines() if re.search(r"\berror\b:", line)
            )
            results.append(CompileResult(source, synthesis, proc.returncode, errors))
    return results
