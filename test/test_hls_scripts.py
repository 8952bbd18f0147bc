# SPDX-License-Identifier: Apache-2.0
"""The Vitis HLS / Vivado scripts agree with the C++ top function, accel/interface.py and the
overlay metadata the driver reads (accel/hwh.py). No Xilinx tool runs here, so this is what keeps
the scripts from rotting: top name, ports and bundles, AXI-lite offsets, part, clock, IP
identity."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from edgemoe_ros.accel import hwh
from edgemoe_ros.accel import interface as itf
from edgemoe_ros.model.config import ModelConfig

HLS = Path(__file__).resolve().parents[1] / "hls_accel"
VITIS = HLS / "vitis"
BD = hwh.BLOCK_DESIGN


# ------------------------------------------------------------------ parsers
def _top_source() -> Path:
    hits = [
        p
        for p in sorted((HLS / "src").glob("*.cpp"))
        if re.search(rf"\bvoid\s+{itf.TOP_FUNCTION}\s*\(", p.read_text())
    ]
    assert len(hits) == 1, (
        f"expected one definition of {itf.TOP_FUNCTION} in hls_accel/src, found {hits}"
    )
    return hits[0]


def _top_signature() -> list[tuple[str, bool]]:
    """(argument name, is_pointer) of the top function, in order."""
    text = _top_source().read_text()
    m = re.search(rf"\bvoid\s+{itf.TOP_FUNCTION}\s*\((.*?)\)\s*\{{", text, re.S)
    assert m, "cannot parse the top function signature"
    args = []
    for decl in m.group(1).split(","):
        name = re.search(r"(\w+)\s*$", decl.strip()).group(1)
        args.append((name, "*" in decl))
    return args


def _pragmas() -> dict[str, dict[str, dict[str, str]]]:
    """{'m_axi'|'s_axilite': {port: {option: value}}} from '#pragma HLS INTERFACE' lines."""
    out: dict[str, dict[str, dict[str, str]]] = {"m_axi": {}, "s_axilite": {}}
    for line in _top_source().read_text().splitlines():
        m = re.match(r"\s*#pragma\s+HLS\s+INTERFACE\s+(\w+)\s+(.*)$", line, re.I)
        if not m:
            continue
        opts = dict(re.findall(r"(\w+)\s*=\s*([\w.]+)", m.group(2)))
        out.setdefault(m.group(1).lower(), {})[opts["port"]] = opts
    return out


def _tcl_sets(path: Path) -> dict[str, str]:
    """Top-level 'set name value' of a tcl script (value without surrounding braces)."""
    sets = {}
    for line in path.read_text().splitlines():
        m = re.match(r"set\s+(\w+)\s+(\S.*?)\s*$", line)
        if m and not m.group(2).startswith("["):
            sets[m.group(1)] = m.group(2).strip("{}")
    return sets


def _tcl_dict(path: Path, name: str) -> dict[str, str]:
    m = re.search(rf"set\s+{name}\s+\[dict create(.*?)\]", path.read_text(), re.S)
    assert m, f"{path.name}: no 'set {name} [dict create ...]'"
    tokens = [t.strip("{}") for t in re.findall(r"\{[^}]*\}|[^\s\\]+", m.group(1))]
    assert len(tokens) % 2 == 0, f"{path.name}: odd number of words in dict {name}"
    return dict(zip(tokens[::2], tokens[1::2], strict=True))


def _cfg(path: Path) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("["):
            continue
        key, _, value = line.partition("=")
        values.setdefault(key.strip(), []).append(value.strip())
    return values


# ------------------------------------------------------------------ C++ <-> interface.py
def test_top_function_arguments_are_the_kernel_args():
    assert _top_signature() == [(a.name, a.kind == "pointer") for a in itf.KERNEL_ARGS]


def test_axi_bundles_and_axilite_offsets_come_from_interface():
    pragmas = _pragmas()
    for arg in itf.KERNEL_ARGS:
        lite = pragmas["s_axilite"][arg.name]
        assert lite["bundle"] == itf.CONTROL_BUNDLE, arg.name
        assert int(lite["offset"], 0) == arg.offset, arg.name
        if arg.kind == "pointer":
            m_axi = pragmas["m_axi"][arg.name]
            assert m_axi["bundle"] == arg.bundle, arg.name
            assert m_axi["offset"] == "slave", (
                f"{arg.name}: the address must be an AXI-lite register"
            )
    assert pragmas["s_axilite"]["return"]["bundle"] == itf.CONTROL_BUNDLE  # ap_ctrl at 0x00
    assert set(pragmas["m_axi"]) == set(itf.POINTER_ARGS)


def test_every_m_axi_port_has_the_depth_of_its_buffer():
    """Co-simulation needs depth= on every pointer: the generated macro, valued from
    interface.py."""
    header = (HLS / "include" / "edgemoe_interface.h").read_text()
    depths = itf.port_depths(ModelConfig())
    for name, opts in _pragmas()["m_axi"].items():
        macro = opts.get("depth")
        assert macro == f"EDGEMOE_DEPTH_{name.upper()}", name
        m = re.search(rf"#define {macro} (\d+)", header)
        assert m and int(m.group(1)) == depths[name], name
    assert set(depths) == set(itf.POINTER_ARGS)


def test_axilite_offsets_follow_the_vitis_hls_layout():
    """Vitis HLS packs args from 0x10: 64-bit pointers take 12 bytes, 32-bit scalars 8 (value +
    gap)."""
    offset = 0x10
    for arg in itf.KERNEL_ARGS:
        assert arg.offset == offset, arg.name
        offset += 12 if arg.kind == "pointer" else 8
    assert offset <= itf.CONTROL_RANGE_BYTES


# ------------------------------------------------------------------ run_hls.tcl
def test_run_hls_tcl_builds_our_top_for_the_zcu102_at_300mhz():
    sets = _tcl_sets(VITIS / "run_hls.tcl")
    assert sets["top"] == itf.TOP_FUNCTION
    assert sets["part"] == itf.FPGA_PART
    assert float(sets["clock_period"]) == pytest.approx(1000.0 / itf.CLOCK_MHZ, abs=1e-3)
    assert (sets["ip_vendor"], sets["ip_library"], sets["ip_version"]) == (
        BD.ip_vendor,
        BD.ip_library,
        BD.ip_version,
    )
    text = (VITIS / "run_hls.tcl").read_text()
    for command in (
        "set_top $top",
        "set_part $part",
        "create_clock -period $clock_period",
        "csim_design",
        "csynth_design",
        "cosim_design",
        "export_design",
        "-flow_target vivado",
        "-m_axi_addr64",
    ):
        assert command in text, command
    # Vitis defines __SYNTHESIS__ itself; a project macro that ap_decl.h turns into __SYNTHESIS__
    # would compile synthesis-only paths into csim_design and cosim's testbench.
    assert "__HLS_SYN__" not in text and "-D__SYNTHESIS__" not in text


def test_run_hls_tcl_sources_are_the_kernel_without_the_csim_abi():
    sets = _tcl_sets(VITIS / "run_hls.tcl")
    syn = set(sets["syn_sources"].split())
    all_src = {f"src/{p.name}" for p in (HLS / "src").glob("*.cpp")}
    csim_only = {
        f"src/{p.name}" for p in (HLS / "src").glob("*.cpp") if "edgemoe_csim_run" in p.read_text()
    }
    assert csim_only and syn == all_src - csim_only
    assert f"src/{_top_source().name}" in syn
    for tb in sets["tb_sources"].split():
        assert (HLS / tb).is_file(), tb


def test_shim_headers_are_exactly_the_clean_room_ones():
    """The g++-only stand-ins must be kept out of synthesis, and nothing else."""
    shims = set(_tcl_sets(VITIS / "run_hls.tcl")["shim_headers"].split())
    own = {
        p.name
        for p in (HLS / "include").glob("*.h")
        if re.search(r"#define\s+EDGEMOE_OWN_HLS_", p.read_text())
    }
    assert shims == own == {"hls_stream.h", "hls_vector.h"}
    # our own math is not a stand-in: nothing may live in (or call into) namespace hls but them
    for header in (HLS / "include").glob("*.h"):
        if header.name not in shims:
            assert "namespace hls" not in header.read_text(), header.name


def test_axi_width_and_alignment_settings_come_from_interface():
    """The tool is promised what pack_weights and burst.h deliver: 64-byte aligned bursts of
    128-bit beats; run_hls.tcl and hls_config.cfg say the same."""
    tcl = (VITIS / "run_hls.tcl").read_text()
    cfg = _cfg(VITIS / "hls_config.cfg")
    align = re.search(r"-m_axi_alignment_byte_size (\d+)", tcl)
    widen = re.search(r"-m_axi_max_widen_bitwidth (\d+)", tcl)
    assert align and int(align.group(1)) == itf.BURST_ALIGN_BYTES
    assert widen and int(widen.group(1)) == itf.AXI_DATA_WIDTH_BITS
    assert cfg["syn.interface.m_axi_alignment_byte_size"] == [str(itf.BURST_ALIGN_BYTES)]
    assert cfg["syn.interface.m_axi_max_widen_bitwidth"] == [str(itf.AXI_DATA_WIDTH_BITS)]
    # AXI bursts may not cross 4 KiB: 256 beats of the weight masters is exactly that.
    for arg in ("weights_one_time", "weights_experts"):
        beats = int(_pragmas()["m_axi"][arg]["max_read_burst_length"])
        assert beats * itf.AXI_DATA_WIDTH_BITS // 8 <= 4096, arg


# ------------------------------------------------------------------ hls_config.cfg
def test_hls_config_matches_run_hls_tcl():
    cfg = _cfg(VITIS / "hls_config.cfg")
    sets = _tcl_sets(VITIS / "run_hls.tcl")
    assert cfg["part"] == [itf.FPGA_PART]
    assert cfg["flow_target"] == ["vivado"]
    assert cfg["syn.top"] == [itf.TOP_FUNCTION]
    assert float(cfg["clock"][0].removesuffix("ns")) == pytest.approx(
        1000.0 / itf.CLOCK_MHZ, abs=1e-3
    )
    syn = {str((VITIS / f).resolve().relative_to(HLS)) for f in cfg["syn.file"]}
    assert syn == set(sets["syn_sources"].split())
    tb = {str((VITIS / f).resolve().relative_to(HLS)) for f in cfg["tb.file"]}
    assert tb == set(sets["tb_sources"].split())
    assert cfg["syn.interface.m_axi_addr64"] == ["1"]
    assert (cfg["package.ip.vendor"], cfg["package.ip.library"], cfg["package.ip.version"]) == (
        [BD.ip_vendor], [BD.ip_library], [BD.ip_version])
    assert cfg["package.output.format"] == ["ip_catalog"]
    # the staged include dir of run_hls.tcl ($hls_root/build/vitis/include)
    for flags, tcl_flags in (
        (cfg["syn.cflags"][0], sets["syn_cflags"]),
        (cfg["tb.cflags"][0], sets["tb_cflags"]),
    ):
        inc = re.search(r"-I(\S+)", flags).group(1)
        assert (VITIS / inc).resolve() == (HLS / "build" / "vitis" / "include").resolve()
        assert flags.replace(f"-I{inc}", "-I$inc_dir") == tcl_flags.strip('"')
        assert "__HLS_SYN__" not in flags and "__SYNTHESIS__" not in flags


# ------------------------------------------------------------------ block_design.tcl
def test_block_design_matches_the_overlay_metadata():
    path = VITIS / "block_design.tcl"
    sets = _tcl_sets(path)
    assert sets["design_name"] == BD.name
    assert sets["part"] == itf.FPGA_PART
    assert sets["board_part"] == BD.board
    assert float(sets["clock_mhz"]) == itf.CLOCK_MHZ
    assert sets["ip_vlnv"] == BD.ip_vlnv
    assert sets["ip_instance"] == BD.ip_instance
    assert (sets["ps_vlnv"], sets["ps_instance"]) == (BD.ps_vlnv, BD.ps_instance)
    assert sets["ctrl_master"] == BD.control_master
    assert sets["ctrl_port"] == itf.CONTROL_BUNDLE_PORT
    assert int(sets["ctrl_base"], 16) == BD.control_base
    assert (
        int(sets["ctrl_range"].removesuffix("K")) * 1024
        == BD.control_range
        >= itf.CONTROL_RANGE_BYTES
    )


def test_every_axi_master_reaches_ddr_through_the_hp_port_of_the_overlay_metadata():
    path = VITIS / "block_design.tcl"
    hp = _tcl_dict(path, "hp_of_bundle")
    assert hp == BD.hp_port_of_bundle
    assert (
        set(hp)
        == set(itf.AXI_MASTER_BUNDLES)
        == {p["bundle"] for p in _pragmas()["m_axi"].values()}
    )
    gp = _tcl_dict(path, "ps_gp_of_hp")
    assert set(hp.values()) <= set(gp)
    for port, (ps_config_name, clock_pin) in ((k, v.split()) for k, v in gp.items()):
        n = int(re.fullmatch(r"S_AXI_HP(\d)_FPD", port).group(1))  # PS8: HPn is S_AXI_GP(n+2)
        assert (ps_config_name, clock_pin) == (f"S_AXI_GP{n + 2}", f"saxihp{n}_fpd_aclk")
    text = path.read_text()
    for command in (
        "apply_bd_automation",
        "assign_bd_address",
        "launch_runs impl_1 -to_step write_bitstream",
        "pl_ps_irq0",
        "edgemoe_export_overlay",
    ):
        assert command in text, command


def test_pl_clock_divisors_give_the_kernel_clock():
    assert BD.iopll_mhz / (BD.pl0_divisor0 * BD.pl0_divisor1) == pytest.approx(itf.CLOCK_MHZ)


# ------------------------------------------------------------------ generated .hwh <-> C++
def test_generated_hwh_registers_match_the_cpp_pragmas():
    root = ET.fromstring(hwh.generate_hwh())
    module = next(m for m in root.iter("MODULE") if m.get("INSTANCE") == BD.ip_instance)
    assert module.get("VLNV") == BD.ip_vlnv and module.get("MODTYPE") == itf.TOP_FUNCTION
    block = next(module.iter("ADDRESSBLOCK"))
    assert block.get("INTERFACE") == itf.CONTROL_BUNDLE_PORT
    offsets = {}
    for reg in block.iter("REGISTER"):
        props = {p.get("NAME"): p.get("VALUE") for p in reg.findall("PROPERTY")}
        offsets[reg.get("NAME")] = int(props["ADDRESS_OFFSET"])
    lite = _pragmas()["s_axilite"]
    for name, is_pointer in _top_signature():
        cpp = int(lite[name]["offset"], 0)
        if is_pointer:
            assert (offsets[f"{name}_1"], offsets[f"{name}_2"]) == (cpp, cpp + 4)
        else:
            assert offsets[name] == cpp
    masters = {b.get("NAME") for b in module.iter("BUSINTERFACE") if b.get("TYPE") == "MASTER"}
    assert masters == {f"m_axi_{b}" for b in itf.AXI_MASTER_BUNDLES}
    info = root.find("SYSTEMINFO")
    assert (
        f"{info.get('DEVICE')}-{info.get('PACKAGE')}{info.get('SPEEDGRADE')}"
        == itf.FPGA_PART.rsplit("-", 1)[0]
    )


# ------------------------------------------------------ Vivado flow: strategy, timing gate, export
def _tcl_interp(**properties: str):
    """A plain Tcl interpreter with overlay_export.tcl sourced and Vivado's get_property stubbed
    to return ``properties`` (e.g. STATS.WNS) for any object."""
    tkinter = pytest.importorskip("tkinter")
    tcl = tkinter.Tcl()
    tcl.eval("proc get_property {name obj} { global props; if {[dict exists $props $name]} "
             "{ return [dict get $props $name] }; return {} }")
    tcl.eval(f"set props [dict create {' '.join(f'{k} {{{v}}}' for k, v in properties.items())}]")
    tcl.eval(f"source {{{VITIS / 'overlay_export.tcl'}}}")
    return tcl


def test_implementation_uses_a_performance_strategy():
    sets = _tcl_sets(VITIS / "block_design.tcl")
    text = (VITIS / "block_design.tcl").read_text()
    assert sets["impl_strategy"].startswith("Performance_")
    assert sets["synth_strategy"] == "Flow_PerfOptimized_high"
    assert "set_property strategy $impl_strategy [get_runs impl_1]" in text
    assert "set_property strategy $synth_strategy [get_runs synth_1]" in text
    # the strategies are set before the runs are launched
    assert text.index("set_property strategy $impl_strategy") < text.index("launch_runs impl_1")


@pytest.mark.parametrize("wns, whs, error", [
    ("0.012", "0.020", None),
    ("0.000", "0.000", None),
    ("-0.004", "0.020", "WNS -0.004 ns < 0.0 ns"),
    ("0.100", "-0.010", "WHS -0.010 ns < 0.0 ns"),
    ("", "", "reports no slack"),
])
def test_timing_gate_fails_the_build_on_negative_slack(wns, whs, error):
    import tkinter

    tcl = _tcl_interp(**{"STATS.WNS": wns, "STATS.WHS": whs})
    if error is None:
        assert tcl.eval("edgemoe_timing_gate impl_1 0.0 0.0") == f"WNS {wns} WHS {whs}"
    else:
        with pytest.raises(tkinter.TclError, match=re.escape(error)):
            tcl.eval("edgemoe_timing_gate impl_1 0.0 0.0")


def test_block_design_gates_timing_before_it_writes_the_overlay():
    text = (VITIS / "block_design.tcl").read_text()
    sets = _tcl_sets(VITIS / "block_design.tcl")
    assert float(sets["min_wns_ns"]) == 0.0 and float(sets["min_whs_ns"]) == 0.0
    assert 'source "$script_dir/overlay_export.tcl"' in text
    wait = text.index("wait_on_run impl_1")
    gate = text.index("edgemoe_timing_gate [get_runs impl_1] $min_wns_ns $min_whs_ns")
    export = text.index("edgemoe_export_overlay $design_name")
    assert wait < gate < export
    assert "file copy" not in text  # the only copies are the export procedure's
    # stale overlay files go before the runs start, so a failed build leaves none behind
    assert (
        text.index(
            'file delete -force "$out_dir/${design_name}.bit" "$out_dir/${design_name}.hwh"'
        )
        < wait
    )


@pytest.mark.parametrize("tree", ["gen", "srcs"])
def test_export_puts_bit_and_hwh_side_by_side_under_the_overlay_name(tmp_path, tree):
    name = _tcl_sets(VITIS / "block_design.tcl")["design_name"]
    # what the driver opens
    assert name == BD.name and hwh.write_overlay(tmp_path / "sim").name == f"{name}.bit"
    run_dir = tmp_path / "runs" / "impl_1"
    run_dir.mkdir(parents=True)
    (run_dir / f"{name}_wrapper.bit").write_bytes(b"bit")
    handoff = (
        tmp_path / "vivado" / f"{name}_vivado.{tree}" / "sources_1" / "bd" / name / "hw_handoff"
    )
    handoff.mkdir(parents=True)
    (handoff / f"{name}.hwh").write_text("<EDKSYSTEM/>")
    out = tmp_path / "overlay"
    tcl = _tcl_interp()
    written = tcl.eval(
        f"edgemoe_export_overlay {name} {{{run_dir}}} {{{tmp_path / 'vivado'}}} {{{out}}}"
    )
    assert sorted(p.name for p in out.iterdir()) == [f"{name}.bit", f"{name}.hwh"]
    assert (out / f"{name}.bit").read_bytes() == b"bit" and (
        out / f"{name}.hwh"
    ).read_text() == "<EDKSYSTEM/>"
    assert str(out / f"{name}.bit") in written


def test_export_without_a_hardware_handoff_fails(tmp_path):
    import tkinter

    run_dir = tmp_path / "impl_1"
    run_dir.mkdir()
    (run_dir / "edgemoe_wrapper.bit").write_bytes(b"bit")
    with pytest.raises(tkinter.TclError, match="no hardware handoff edgemoe.hwh"):
        _tcl_interp().eval(
            f"edgemoe_export_overlay edgemoe {{{run_dir}}} {{{tmp_path}}} {{{tmp_path / 'out'}}}"
        )
    assert not (tmp_path / "out").exists()


def test_the_driver_resets_the_pl_through_the_reset_the_block_design_wires():
    sets = _tcl_sets(VITIS / "block_design.tcl")
    assert sets["pl_reset"] == BD.pl_reset_pin
    assert "connect_bd_net [get_bd_pins $ps/$pl_reset] [get_bd_pins $rst/ext_reset_in]" in \
        (VITIS / "block_design.tcl").read_text()


@pytest.mark.parametrize("script", sorted(p.name for p in VITIS.glob("*.tcl")))
def test_tcl_scripts_are_complete_tcl(script):
    """Balanced braces, brackets and quotes: what Vivado would reject before running a command."""
    tcl = _tcl_interp()
    tcl.setvar("script_text", (VITIS / script).read_text())
    assert tcl.eval("info complete $script_text") == "1"
