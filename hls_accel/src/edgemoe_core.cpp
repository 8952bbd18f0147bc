// SPDX-License-Identifier: Apache-2.0
// One image through the whole backbone (SPEC §2), layer by layer, on on-chip buffers:
// patch embedding, 12 pre-LN blocks (attention; dense MLP or MoE MLP), final LayerNorm.
// Small parameters (biases, LayerNorm, cls/pos embedding, pixel normalisation) live in an on-chip
// cache refreshed only when reload_one_time_weights is set; every linear weight, expert weights
// included, streams from DRAM through the one shared linear unit in double-buffered bands
// (linear.h, moe.h). Both weight masters read whole AXI beats.
//
// Memory plan (counted by edgemoe_ros/accel/resources.py, which test_resources.py ties to these
// declarations): five activation buffers of one image's tokens, time-shared by every stage:
//   x     residual stream                 xn   LayerNorm output
//   wide  qkv | MLP hidden | expert hidden | patch-embedding input (N x ACT_WIDE_COLS)
//   mid   attention output | expert output rows
//   y     branch output | an expert's gathered input rows (until the MoE combine)
// The activation buffers are cyclically partitioned so the linear unit reads a TILE-wide input
// slice and the elementwise loops ELEM_LANES elements per cycle.
#include <string.h>

#include "attention.h"
#include "burst.h"
#include "datatypes.h"
#include "edgemoe_core.h"
#include "gelu.h"
#include "layernorm.h"
#include "linear.h"
#include "moe.h"
#include "patch_embed.h"

namespace edgemoe {

namespace {

const int N = NUM_TOKENS;
const int L = ELEM_LANES;

word_t param_cache[PARAMS_WORDS];  // on-chip copy of the params section
bool params_loaded = false;

act_raw_t x[NUM_TOKENS * DIM];              // residual stream
act_raw_t xn[NUM_TOKENS * DIM];             // LayerNorm output
act_raw_t wide[NUM_TOKENS * ACT_WIDE_COLS];  // qkv | MLP hidden | expert hidden | patches
act_raw_t mid[NUM_TOKENS * DIM];            // attention output | expert output rows
act_raw_t y[NUM_TOKENS * DIM];              // branch output | gathered expert input rows

void residual_add(act_raw_t *dst, const act_raw_t *src) {
Residual:
  for (int i = 0; i < N * DIM; i += L) {
#pragma HLS PIPELINE II = 1
  ResidualLanes:
    for (int j = 0; j < L; ++j) {
      if (i + j < N * DIM) dst[i + j] = add_sat(dst[i + j], src[i + j]);
    }
  }
}

void run_block(int b, const word_t *p, const beat_t *w, const beat_t *weights_experts, int32_t task_id,
               int32_t *routing) {
#pragma HLS INLINE
  layernorm(x, xn, N, p + OFF_NORM1_W[b], p + OFF_NORM1_B[b]);
  linear_stream(xn, N, DIM, 3 * DIM, w, OFF_QKV_W[b], FMT_WEIGHT_F, p + OFF_QKV_B[b], FMT_ATTN_BIAS_F, wide);
  attention(wide, mid);
  linear_stream(mid, N, DIM, DIM, w, OFF_PROJ_W[b], FMT_WEIGHT_F, p + OFF_PROJ_B[b], FMT_ATTN_BIAS_F, y);
  residual_add(x, y);
  layernorm(x, xn, N, p + OFF_NORM2_W[b], p + OFF_NORM2_B[b]);
  if (OFF_ROUTER_W[b] >= 0) {  // MoE block
    const int layer = b / MOE_EVERY;
    const int64_t router_first = OFF_ROUTER_W[b] + (acc_t)task_id * NUM_EXPERTS * DIM;
    const int64_t layer_first = (acc_t)layer * NUM_EXPERTS * EXPERT_STRIDE_WORDS;
    moe_mlp(xn, w, router_first, weights_experts, layer_first, y, routing + (acc_t)layer * N * TOP_K, wide, mid);
  } else {
    linear_stream(xn, N, DIM, MLP_HIDDEN, w, OFF_MLP_FC1_W[b], FMT_WEIGHT_F, p + OFF_MLP_FC1_B[b], FMT_BIAS_F,
                  wide);
    gelu_buffer(wide, N * MLP_HIDDEN);
    linear_stream(wide, N, MLP_HIDDEN, DIM, w, OFF_MLP_FC2_W[b], FMT_WEIGHT_F, p + OFF_MLP_FC2_B[b],
                  FMT_BIAS_F, y);
  }
  residual_add(x, y);
}

}  // namespace

int edgemoe_core(const uint8_t *images, const beat_t *weights_one_time, const beat_t *weights_experts,
                 int32_t *features_out, int32_t *routing_out, int32_t num_images, int32_t task_id,
                 int32_t reload_one_time_weights) {
#pragma HLS ARRAY_PARTITION variable = x cyclic factor = ELEM_LANES
#pragma HLS ARRAY_PARTITION variable = xn cyclic factor = ELEM_LANES
#pragma HLS ARRAY_PARTITION variable = wide cyclic factor = ELEM_LANES
#pragma HLS ARRAY_PARTITION variable = mid cyclic factor = ELEM_LANES
#pragma HLS ARRAY_PARTITION variable = y cyclic factor = ELEM_LANES
#pragma HLS ARRAY_PARTITION variable = param_cache cyclic factor = WORDS_PER_BEAT
  // One linear unit, one LayerNorm unit and one attention unit for the whole network: run_block,
  // patch_embed and moe_mlp are inlined here, so every call site shares these instances.
#pragma HLS ALLOCATION function instances = linear_stream limit = 1
#pragma HLS ALLOCATION function instances = layernorm limit = 1
#pragma HLS ALLOCATION function instances = attention limit = 1
  if (num_images < 1 || num_images > MAX_IMAGES) return CSIM_ERR_NUM_IMAGES;
  if (task_id < 0 || task_id >= NUM_TASKS) return CSIM_ERR_TASK_ID;
  if (reload_one_time_weights) {
    burst_read(weights_one_time, 0, PARAMS_WORDS, param_cache);  // LoadParams: one burst
    params_loaded = true;
  }
  if (!params_loaded) return CSIM_ERR_NO_ONE_TIME_WEIGHTS;
  const word_t *p = param_cache;
  const beat_t *w = weights_one_time;
Images:
  for (int img = 0; img < num_images; ++img) {
    const uint8_t *image = images + (acc_t)img * IMG_H * IMG_W * IN_CHANS;
    int32_t *routing = routing_out + (acc_t)img * NUM_MOE_LAYERS * N * TOP_K;
    patch_embed(image, p, w, x, wide);
  Blocks:
    for (int b = 0; b < DEPTH; ++b) run_block(b, p, w, weights_experts, task_id, routing);
    layernorm(x, xn, N, p + OFF_NORM_W, p + OFF_NORM_B);
    int32_t *feats = features_out + (acc_t)img * NUM_PATCHES * DIM;
  WriteFeatures:  // drop the class token (row 0)
    for (int i = 0; i < NUM_PATCHES * DIM; ++i) {
#pragma HLS PIPELINE II = 1
      feats[i] = xn[DIM + i];  // one 32-bit word per beat of gmem3 (0.1 ms per image; not worth widening)
    }
  }
  return CSIM_OK;
}

}  // namespace edgemoe
