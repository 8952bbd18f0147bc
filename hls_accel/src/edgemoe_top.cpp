// SPDX-License-Identifier: Apache-2.0
// Synthesis top of the accelerator: the argument list, AXI bundles and AXI-lite offsets are those
// of edgemoe_ros/accel/interface.py (KERNEL_ARGS); test_hls_build checks they agree. The two weight
// masters are AXI_DATA_WIDTH_BITS wide (beat_t), so each carries WORDS_PER_BEAT int16 words per beat.
// depth = the elements behind each pointer for MAX_IMAGES images (interface.port_depths, generated
// into edgemoe_interface.h): co-simulation copies that many, and the testbench allocates as much.
#include "edgemoe_core.h"

using edgemoe::beat_t;

void edgemoe_top(const uint8_t *images, const beat_t *weights_one_time, const beat_t *weights_experts,
                 int32_t *features_out, int32_t *routing_out, int32_t num_images, int32_t task_id,
                 int32_t reload_one_time_weights) {
#pragma HLS INTERFACE m_axi port = images offset = slave bundle = gmem0 depth = EDGEMOE_DEPTH_IMAGES max_read_burst_length = 256
#pragma HLS INTERFACE m_axi port = weights_one_time offset = slave bundle = gmem1 depth = EDGEMOE_DEPTH_WEIGHTS_ONE_TIME max_read_burst_length = 256
#pragma HLS INTERFACE m_axi port = weights_experts offset = slave bundle = gmem2 depth = EDGEMOE_DEPTH_WEIGHTS_EXPERTS max_read_burst_length = 256
#pragma HLS INTERFACE m_axi port = features_out offset = slave bundle = gmem3 depth = EDGEMOE_DEPTH_FEATURES_OUT max_write_burst_length = 256
#pragma HLS INTERFACE m_axi port = routing_out offset = slave bundle = gmem4 depth = EDGEMOE_DEPTH_ROUTING_OUT max_write_burst_length = 256
#pragma HLS INTERFACE s_axilite port = images bundle = control offset = 0x10
#pragma HLS INTERFACE s_axilite port = weights_one_time bundle = control offset = 0x1C
#pragma HLS INTERFACE s_axilite port = weights_experts bundle = control offset = 0x28
#pragma HLS INTERFACE s_axilite port = features_out bundle = control offset = 0x34
#pragma HLS INTERFACE s_axilite port = routing_out bundle = control offset = 0x40
#pragma HLS INTERFACE s_axilite port = num_images bundle = control offset = 0x4C
#pragma HLS INTERFACE s_axilite port = task_id bundle = control offset = 0x54
#pragma HLS INTERFACE s_axilite port = reload_one_time_weights bundle = control offset = 0x5C
#pragma HLS INTERFACE s_axilite port = return bundle = control
  (void)edgemoe::edgemoe_core(images, weights_one_time, weights_experts, features_out, routing_out,
                              num_images, task_id, reload_one_time_weights);
}
