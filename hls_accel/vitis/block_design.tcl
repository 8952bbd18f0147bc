# SPDX-License-Identifier: Apache-2.0
# Vivado block design of the Edge-MoE accelerator on a ZCU102, from the exported HLS IP to the
# .bit + .hwh pair that pynq.Overlay loads.
#
#   vivado -mode batch -source block_design.tcl [-tclargs <hls_ip_dir> <jobs>]
#
#   <hls_ip_dir>  the IP exported by run_hls.tcl (default: ../build/vitis/edgemoe_hls/solution_zcu102/impl/ip)
#   <jobs>        parallel synthesis/implementation jobs (default 8)
#
# Output: ../build/vitis/overlay/edgemoe.bit and edgemoe.hwh (copy both to the board, same folder),
# written only when the implemented design meets timing (Performance strategy; the build fails
# when WNS or WHS < 0); timing and utilisation reports in ../build/vitis/reports.
#
# Every name, address and clock below must agree with edgemoe_ros/accel/interface.py and
# edgemoe_ros/accel/hwh.py (BLOCK_DESIGN): the driver finds the IP and its registers through the
# .hwh, and test/test_hls_scripts.py checks that these values match.
#
# Topology: Zynq UltraScale+ PS (ZCU102 preset) with PL clock 0 at 300 MHz from the IOPLL.
#   M_AXI_HPM0_FPD -> SmartConnect -> edgemoe_top_0/s_axi_control       (AXI-lite registers)
#   m_axi_gmem0 (images) + m_axi_gmem4 (routing) -> SmartConnect -> S_AXI_HP0_FPD
#   m_axi_gmem1 (one-time weights)               -> SmartConnect -> S_AXI_HP1_FPD
#   m_axi_gmem2 (expert weights, bandwidth-bound)-> SmartConnect -> S_AXI_HP2_FPD
#   m_axi_gmem3 (features)                       -> SmartConnect -> S_AXI_HP3_FPD
#   edgemoe_top_0/interrupt -> pl_ps_irq0

set script_dir [file dirname [file normalize [info script]]]
set hls_root   [file normalize "$script_dir/.."]
set build_dir  "$hls_root/build/vitis"
source "$script_dir/overlay_export.tcl"

set design_name  edgemoe
set part         xczu9eg-ffvb1156-2-e
set board_part   xilinx.com:zcu102:part0:3.4
set clock_mhz    300
set ip_vlnv      edgemoe.org:hls:edgemoe_top:1.0
set ip_instance  edgemoe_top_0
set ps_vlnv      xilinx.com:ip:zynq_ultra_ps_e:3.5
set ps_instance  zynq_ultra_ps_e_0
set ctrl_master  M_AXI_HPM0_FPD
set ctrl_port    s_axi_control
set ctrl_base    0xA0000000
set ctrl_range   64K
# PS-to-PL reset that resets the accelerator (the driver pulses it to recover a hung kernel).
set pl_reset     pl_resetn0
# Implementation for speed: the kernel must close timing at 300 MHz (3.333 ns).
set synth_strategy Flow_PerfOptimized_high
set impl_strategy  Performance_ExplorePostRoutePhysOpt
# Timing gate (overlay_export.tcl): worst setup / hold slack must be at least this, in ns.
set min_wns_ns   0.0
set min_whs_ns   0.0
# AXI master bundle -> PS high-performance slave port.
set hp_of_bundle [dict create \
    gmem0 S_AXI_HP0_FPD \
    gmem1 S_AXI_HP1_FPD \
    gmem2 S_AXI_HP2_FPD \
    gmem3 S_AXI_HP3_FPD \
    gmem4 S_AXI_HP0_FPD]
# PS configuration names of the HP slave ports (S_AXI_GP2..5 are HP0..3 on the PS8) and their clocks.
set ps_gp_of_hp [dict create \
    S_AXI_HP0_FPD {S_AXI_GP2 saxihp0_fpd_aclk} \
    S_AXI_HP1_FPD {S_AXI_GP3 saxihp1_fpd_aclk} \
    S_AXI_HP2_FPD {S_AXI_GP4 saxihp2_fpd_aclk} \
    S_AXI_HP3_FPD {S_AXI_GP5 saxihp3_fpd_aclk}]

set ip_dir [expr {[llength $argv] > 0 ? [lindex $argv 0] : "$build_dir/edgemoe_hls/solution_zcu102/impl/ip"}]
set jobs   [expr {[llength $argv] > 1 ? [lindex $argv 1] : 8}]
if {![file isdirectory $ip_dir]} {
    error "HLS IP not found at $ip_dir: run `vitis_hls -f run_hls.tcl` first (see README.md)"
}

# ---------------------------------------------------------------- project
create_project -force ${design_name}_vivado "$build_dir/vivado" -part $part
set_property board_part $board_part [current_project]
set_property ip_repo_paths [list $ip_dir] [current_project]
update_ip_catalog -rebuild
create_bd_design $design_name

# ---------------------------------------------------------------- processing system
set ps [create_bd_cell -type ip -vlnv $ps_vlnv $ps_instance]
apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e -config {apply_board_preset "1"} $ps
set ps_cfg [list \
    CONFIG.PSU__USE__M_AXI_GP0 {1} CONFIG.PSU__MAXIGP0__DATA_WIDTH {128} \
    CONFIG.PSU__USE__M_AXI_GP1 {0} CONFIG.PSU__USE__M_AXI_GP2 {0} \
    CONFIG.PSU__FPGA_PL0_ENABLE {1} \
    CONFIG.PSU__CRL_APB__PL0_REF_CTRL__SRCSEL {IOPLL} \
    CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ $clock_mhz \
    CONFIG.PSU__USE__IRQ0 {1}]
foreach hp [lsort -unique [dict values $hp_of_bundle]] {
    set gp [lindex [dict get $ps_gp_of_hp $hp] 0]
    regexp {GP([0-9]+)$} $gp -> n
    lappend ps_cfg CONFIG.PSU__USE__S_AXI_GP$n {1} CONFIG.PSU__SAXIGP${n}__DATA_WIDTH {128}
}
set_property -dict $ps_cfg $ps
set pl_clk [get_bd_pins $ps/pl_clk0]

set rst [create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset rst_pl_clk0]
connect_bd_net $pl_clk [get_bd_pins $rst/slowest_sync_clk]
connect_bd_net [get_bd_pins $ps/$pl_reset] [get_bd_pins $rst/ext_reset_in]
set aresetn [get_bd_pins $rst/peripheral_aresetn]

# ---------------------------------------------------------------- accelerator
set top [create_bd_cell -type ip -vlnv $ip_vlnv $ip_instance]
connect_bd_net $pl_clk [get_bd_pins $top/ap_clk]
connect_bd_net $aresetn [get_bd_pins $top/ap_rst_n]
connect_bd_net [get_bd_pins $top/interrupt] [get_bd_pins $ps/pl_ps_irq0]
connect_bd_net $pl_clk [get_bd_pins $ps/maxihpm0_fpd_aclk]

# control: HPM0_FPD -> SmartConnect -> s_axi_control
set smc_ctrl [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect smc_ctrl]
set_property -dict [list CONFIG.NUM_SI {1} CONFIG.NUM_MI {1}] $smc_ctrl
connect_bd_net $pl_clk [get_bd_pins $smc_ctrl/aclk]
connect_bd_net $aresetn [get_bd_pins $smc_ctrl/aresetn]
connect_bd_intf_net [get_bd_intf_pins $ps/$ctrl_master] [get_bd_intf_pins $smc_ctrl/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins $smc_ctrl/M00_AXI] [get_bd_intf_pins $top/$ctrl_port]

# data: one SmartConnect per HP port, fed by the bundles mapped to it
foreach hp [lsort -unique [dict values $hp_of_bundle]] {
    set bundles [list]
    dict for {bundle port} $hp_of_bundle { if {$port eq $hp} { lappend bundles $bundle } }
    set smc [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect smc_[string tolower $hp]]
    set_property -dict [list CONFIG.NUM_SI [llength $bundles] CONFIG.NUM_MI {1}] $smc
    connect_bd_net $pl_clk [get_bd_pins $smc/aclk]
    connect_bd_net $aresetn [get_bd_pins $smc/aresetn]
    set si 0
    foreach bundle $bundles {
        connect_bd_intf_net [get_bd_intf_pins $top/m_axi_$bundle] [get_bd_intf_pins $smc/S[format %02d $si]_AXI]
        incr si
    }
    connect_bd_intf_net [get_bd_intf_pins $smc/M00_AXI] [get_bd_intf_pins $ps/$hp]
    connect_bd_net $pl_clk [get_bd_pins $ps/[lindex [dict get $ps_gp_of_hp $hp] 1]]
}

# ---------------------------------------------------------------- address map
assign_bd_address -offset $ctrl_base -range $ctrl_range \
    -target_address_space [get_bd_addr_spaces $ps/Data] [get_bd_addr_segs $top/$ctrl_port/Reg]
# every m_axi master sees the whole PS DDR (DDR_LOW and DDR_HIGH) through its HP port
assign_bd_address
validate_bd_design
save_bd_design
write_bd_tcl -force "$build_dir/${design_name}_bd_generated.tcl"

# ---------------------------------------------------------------- bitstream and handoff
set bd_file [get_files ${design_name}.bd]
generate_target all $bd_file
set wrapper [make_wrapper -files $bd_file -top]
add_files -norecurse $wrapper
set_property top ${design_name}_wrapper [current_fileset]
set_property strategy $synth_strategy [get_runs synth_1]
set_property strategy $impl_strategy [get_runs impl_1]
# A failed or timing-failing build must not leave an older overlay behind that looks fresh.
set out_dir "$build_dir/overlay"
file delete -force "$out_dir/${design_name}.bit" "$out_dir/${design_name}.hwh"
launch_runs impl_1 -to_step write_bitstream -jobs $jobs
wait_on_run impl_1
if {[get_property PROGRESS [get_runs impl_1]] ne "100%"} {
    error "implementation failed: see $build_dir/vivado/${design_name}_vivado.runs/impl_1"
}

# timing gate: reports first, then fail the build on negative setup or hold slack
set report_dir "$build_dir/reports"
file mkdir $report_dir
open_run impl_1
report_timing_summary -max_paths 20 -file "$report_dir/${design_name}_timing_summary.rpt"
report_utilization -file "$report_dir/${design_name}_utilization.rpt"
puts "timing: [edgemoe_timing_gate [get_runs impl_1] $min_wns_ns $min_whs_ns]"

# pynq wants <name>.bit and <name>.hwh side by side
set run_dir [get_property DIRECTORY [get_runs impl_1]]
set written [edgemoe_export_overlay $design_name $run_dir "$build_dir/vivado" $out_dir]
puts "overlay written: [join $written { and }]"
