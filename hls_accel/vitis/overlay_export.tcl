# SPDX-License-Identifier: Apache-2.0
# The last two steps of the Vivado flow, as procedures: the timing gate and the export of the
# overlay files pynq loads. block_design.tcl sources this file; test/test_hls_scripts.py runs these
# procedures in a plain Tcl interpreter with Vivado's get_property stubbed, so their behaviour is
# tested without Vivado.

# edgemoe_timing_gate run ?min_wns_ns? ?min_whs_ns?
#   Fails the build (Tcl error, so `vivado -mode batch` exits non-zero) when the implemented run
#   misses timing: worst setup slack (STATS.WNS) or worst hold slack (STATS.WHS) below the limits
#   (0 ns: every path meets the clock). Returns "WNS <ns> WHS <ns>" when it passes.
proc edgemoe_timing_gate {run {min_wns_ns 0.0} {min_whs_ns 0.0}} {
    set wns [get_property STATS.WNS $run]
    set whs [get_property STATS.WHS $run]
    if {$wns eq "" || $whs eq ""} {
        error "timing gate: $run reports no slack (WNS '$wns', WHS '$whs'): was it implemented?"
    }
    if {$wns < $min_wns_ns} {
        error "timing gate: WNS $wns ns < $min_wns_ns ns: the design misses its clock on a setup path\
            (see the timing summary); no overlay written"
    }
    if {$whs < $min_whs_ns} {
        error "timing gate: WHS $whs ns < $min_whs_ns ns: hold violation; no overlay written"
    }
    return "WNS $wns WHS $whs"
}

# edgemoe_export_overlay design_name run_dir project_dir out_dir
#   Copies the implemented bitstream and the block design's hardware handoff into out_dir as
#   <design_name>.bit and <design_name>.hwh, side by side: pynq.Overlay("<dir>/<name>.bit") finds
#   the .hwh by that name. The .hwh sits under <project>.gen (Vivado 2020.2+) or <project>.srcs
#   (older). Returns the two paths.
proc edgemoe_export_overlay {design_name run_dir project_dir out_dir} {
    set bit "$run_dir/${design_name}_wrapper.bit"
    if {![file exists $bit]} { error "no bitstream at $bit" }
    set hwh ""
    foreach tree {gen srcs} {
        set candidates [glob -nocomplain -directory $project_dir \
            "*.$tree/sources_1/bd/$design_name/hw_handoff/$design_name.hwh"]
        if {[llength $candidates] > 0} { set hwh [lindex $candidates 0]; break }
    }
    if {$hwh eq ""} { error "no hardware handoff $design_name.hwh under $project_dir" }
    file mkdir $out_dir
    set out_bit "$out_dir/$design_name.bit"
    set out_hwh "$out_dir/$design_name.hwh"
    file copy -force $bit $out_bit
    file copy -force $hwh $out_hwh
    return [list $out_bit $out_hwh]
}
