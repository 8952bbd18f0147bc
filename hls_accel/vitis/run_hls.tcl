# SPDX-License-Identifier: Apache-2.0
# Vitis HLS build of the Edge-MoE accelerator (top function edgemoe_top) for the ZCU102.
#
#   vitis_hls -f run_hls.tcl [-tclargs <steps> [<case_dir>]]
#
#   <steps>     comma-separated subset of csim,csynth,cosim,export (default: csynth,export)
#   <case_dir>  testbench case for csim/cosim, written by edgemoe_ros.fixedpoint.testbench_io
#               (default: ../build/vitis/tb_case; see README.md)
#
# Output: ../build/vitis/edgemoe_hls/solution_zcu102/{syn/report, impl/ip}; block_design.tcl
# takes the exported IP from impl/ip.
#
# Part, clock, top name and IP identity must agree with edgemoe_ros/accel/interface.py and
# edgemoe_ros/accel/hwh.py (BLOCK_DESIGN); the AXI bundles and AXI-lite offsets are pragmas in
# ../src/edgemoe_top.cpp. test/test_hls_scripts.py checks all of them against each other.

set script_dir [file dirname [file normalize [info script]]]
set hls_root   [file normalize "$script_dir/.."]
set build_dir  "$hls_root/build/vitis"

set top          edgemoe_top
set part         xczu9eg-ffvb1156-2-e
# 300 MHz
set clock_period 3.333
set ip_vendor    edgemoe.org
set ip_library   hls
set ip_version   1.0
# Kernel sources for synthesis (src/csim_api.cpp is the g++ C-simulation ABI, not hardware).
set syn_sources  {src/edgemoe_core.cpp src/edgemoe_top.cpp}
set tb_sources   {tb/testbench.cpp}
# Clean-room stand-ins for the g++ build only: under Vitis the tool's own headers must be used.
# (Our integer math is include/edgemoe_math.h, namespace edgemoe: not a stand-in, always staged.)
set shim_headers {hls_stream.h hls_vector.h}

set steps    [split [expr {[llength $argv] > 0 ? [lindex $argv 0] : "csynth,export"}] ","]
set case_dir [expr {[llength $argv] > 1 ? [file normalize [lindex $argv 1]] : "$build_dir/tb_case"}]
foreach step $steps {
    if {[lsearch -exact {csim csynth cosim export} $step] < 0} {
        error "unknown step '$step': use csim, csynth, cosim, export"
    }
}

# Stage the project headers without the shims, so the Vitis hls_stream.h/hls_vector.h and
# ap_fixed.h are found instead of the clean-room ones in ../include. edgemoe_ros/accel/hls_staging.py
# reads syn_sources, tb_sources, shim_headers and the cflags below and repeats this staging for the
# compile check of test/test_hls_vendor_compile.py: change them here, the check follows.
set inc_dir "$build_dir/include"
file delete -force $inc_dir
file mkdir $inc_dir
foreach header [glob -directory "$hls_root/include" *.h] {
    if {[lsearch -exact $shim_headers [file tail $header]] < 0} {
        file copy -force $header $inc_dir
    }
}
# No project macro: Vitis defines __SYNTHESIS__ itself, and only while synthesising the kernel, so
# csim_design and cosim's testbench compile the host-side checks (asserts) and synthesis drops them.
set syn_cflags "-std=c++14 -I$inc_dir"
set tb_cflags "-std=c++14 -I$inc_dir"

file mkdir $build_dir
cd $build_dir
open_project -reset edgemoe_hls
set_top $top
foreach src $syn_sources { add_files "$hls_root/$src" -cflags $syn_cflags }
foreach src $tb_sources { add_files -tb "$hls_root/$src" -cflags $tb_cflags }

open_solution -reset solution_zcu102 -flow_target vivado
set_part $part
create_clock -period $clock_period -name default
# 64-bit pointers (the driver writes both words). The weight ports are 128-bit beats in the C++
# (beat_t, = AXI_DATA_WIDTH_BITS of edgemoe_ros/accel/interface.py); every weight burst starts on a
# 64-byte boundary (BURST_ALIGN_BYTES: pack_weights pads to it, pynq.allocate is page-aligned), and
# the other ports may be widened to the same 128 bits.
config_interface -m_axi_addr64 -m_axi_alignment_byte_size 64 -m_axi_max_widen_bitwidth 128
config_export -format ip_catalog -rtl verilog -vendor $ip_vendor -library $ip_library -version $ip_version \
    -display_name "Edge-MoE multi-task MoE ViT accelerator" \
    -description "M3ViT backbone (patch embed, 12 blocks, MoE with per-task routers) at 300 MHz"

if {[lsearch $steps csim] >= 0 || [lsearch $steps cosim] >= 0} {
    if {![file exists "$case_dir/case.txt"]} {
        error "testbench case not found in $case_dir (write one with edgemoe_ros.fixedpoint.testbench_io, see README.md)"
    }
}
if {[lsearch $steps csim] >= 0} {
    csim_design -argv $case_dir
}
if {[lsearch $steps csynth] >= 0 || [lsearch $steps cosim] >= 0 || [lsearch $steps export] >= 0} {
    csynth_design
}
if {[lsearch $steps cosim] >= 0} {
    cosim_design -argv $case_dir -rtl verilog -trace_level none
}
if {[lsearch $steps export] >= 0} {
    export_design -format ip_catalog
}
exit
