// SPDX-License-Identifier: Apache-2.0
// Mixture-of-Experts MLP with a per-task router, top-k selection and per-expert token queues.
//
// 1. Router: logits = LN2(x) W_task^T through the shared linear unit; the task id picks W_task,
//    so switching task never reloads weights.
// 2. Top-k by logit (ties to the lower expert id), with explicit "taken" flags and an index that
//    always starts valid: no uninitialised reads, unlike the reference design's top-k.
// 3. Gates: softmax over all experts (exp2 unit, reciprocal), NOT renormalised over the top-k.
// 4. Patch reordering: tokens are queued per expert, and the experts that got tokens are processed
//    one after the other, so each used expert's weights are read from DRAM once per layer; unused
//    experts are never read. An expert's fc1 and fc2 stream through the shared linear unit band by
//    band (linear.h: the next band bursts in while the current one computes), exactly like the
//    dense layers: no expert block is ever held on chip whole (Edge-MoE's memory plan).
// 5. out = narrow(sum_k gate_k * expert_k(x)).
// Twin: fixedpoint/ops.py router_softmax, top_k, combine_experts and emulator._moe_mlp.
#ifndef EDGEMOE_MOE_H_
#define EDGEMOE_MOE_H_

#include "burst.h"
#include "datatypes.h"
#include "gelu.h"
#include "edgemoe_math.h"
#include "hls_stream.h"
#include "linear.h"

// The g++ C-simulation (hls_accel/Makefile defines EDGEMOE_GXX_CSIM) must pick up our stand-in,
// which aborts on a read from an empty stream; under Vitis the tool's hls_stream.h is used.
#if defined(EDGEMOE_GXX_CSIM) && !defined(EDGEMOE_OWN_HLS_STREAM)
#error "C-simulation must use hls_accel/include/hls_stream.h (check the include path order)"
#endif

namespace edgemoe {

struct moe_config {
  static const int n_tokens = NUM_TOKENS, dim = DIM, experts = NUM_EXPERTS, top_k = TOP_K;
  static const int hidden = EXPERT_HIDDEN;
  static const int64_t expert_stride = EXPERT_STRIDE_WORDS;  // block to block (burst-aligned)
  static const int lanes = ELEM_LANES;                       // elements per cycle of copies and sums
};

// Indices of the k largest logits, best first; ties go to the lower expert id.
template <class CONFIG_T = moe_config>
void select_top_k(const act_raw_t *logits, int32_t *chosen) {
  bool taken[NUM_EXPERTS];
#pragma HLS ARRAY_PARTITION variable = taken complete
  for (int e = 0; e < CONFIG_T::experts; ++e) taken[e] = false;
TopK:
  for (int k = 0; k < CONFIG_T::top_k; ++k) {
    int best = -1;
  Scan:
    for (int e = 0; e < CONFIG_T::experts; ++e) {
      if (!taken[e] && (best < 0 || logits[e] > logits[best])) best = e;
    }
    taken[best] = true;  // best >= 0: top_k <= experts is checked at compile time
    chosen[k] = best;
  }
}

// Softmax over all experts of act logits -> gates in act format.
template <class CONFIG_T = moe_config>
void router_softmax(const act_raw_t *logits, act_raw_t *gates) {
  acc_t mx = logits[0];
  for (int e = 1; e < CONFIG_T::experts; ++e) mx = logits[e] > mx ? (acc_t)logits[e] : mx;
  acc_t ex[NUM_EXPERTS];
#pragma HLS ARRAY_PARTITION variable = ex complete
  acc_t sum = 0;
Exp:
  for (int e = 0; e < CONFIG_T::experts; ++e) {
#pragma HLS PIPELINE II = 1
    const acc_t t = round_shift(((acc_t)logits[e] - mx) * LOG2E_RAW, FMT_ACT_F + COEF_FRAC - FMT_SCORE_F);
    ex[e] = exp2_neg(t);
    sum += ex[e];
  }
  const acc_t r = (acc_t)recip<SOFTMAX_RECIP_SHIFT>((uint64_t)sum);
Normalize:
  for (int e = 0; e < CONFIG_T::experts; ++e) {
    gates[e] = (act_raw_t)round_shift(ex[e] * r, SOFTMAX_RECIP_SHIFT - FMT_ACT_F);
  }
}

struct TokenSlot {
  int32_t token;
  int32_t slot;
};

// One expert on its queued tokens: fc1 -> GELU -> fc2 with weights streamed band by band from the
// expert block at word `block` of the experts buffer, then mix[token] += gate * y for each queued
// (token, slot). hidden: rows x hidden scratch, yq: rows x dim scratch (shared buffers, moe_mlp).
template <class CONFIG_T = moe_config>
void expert_compute(const beat_t *experts, int64_t block, const act_raw_t *xq, int rows, const int32_t *queue_tok,
                    const act_raw_t *queue_gate, acc_t *mix, act_raw_t *hidden, act_raw_t *yq) {
#pragma HLS INLINE
  const int D = CONFIG_T::dim, H = CONFIG_T::hidden, L = CONFIG_T::lanes;
  static word_t expert_bias[EXPERT_HIDDEN + DIM];  // fc1.b then fc2.b of this expert
  burst_read(experts, block + EXP_OFF_FC1_B, H, expert_bias);
  burst_read(experts, block + EXP_OFF_FC2_B, D, expert_bias + H);
  linear_stream(xq, rows, D, H, experts, block + EXP_OFF_FC1_W, FMT_WEIGHT_F, expert_bias, FMT_BIAS_F, hidden);
  gelu_buffer(hidden, rows * H);
  linear_stream(hidden, rows, H, D, experts, block + EXP_OFF_FC2_W, FMT_WEIGHT_F, expert_bias + H, FMT_BIAS_F, yq);
Scatter:
  for (int r = 0; r < rows; ++r) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = CONFIG_T::n_tokens
    const acc_t g = queue_gate[r];
    acc_t *m = mix + (acc_t)queue_tok[r] * D;
    const act_raw_t *yr = yq + (acc_t)r * D;
  ScatterLanes:
    for (int d0 = 0; d0 < D; d0 += L) {
#pragma HLS PIPELINE II = 1
      // one expert's queue holds each token once, so no two rows update the same mix row
#pragma HLS DEPENDENCE variable = mix inter false
    ScatterLane:
      for (int j = 0; j < L; ++j) {
        if (d0 + j < D) m[d0 + j] += g * (acc_t)yr[d0 + j];
      }
    }
  }
}

// xn: n_tokens x dim (LN2 output); router from word router_first of the one-time weights (this
// task's E x dim matrix); this layer's E expert blocks from word layer_first of the experts buffer;
// y: n_tokens x dim output; routing: n_tokens x top_k chosen expert ids, written, never read back.
// Scratch (the caller's activation buffers that are idle during the MoE MLP): hidden holds
// n_tokens x hidden, yq n_tokens x dim; y doubles as the gathered-token buffer until the combine.
template <class CONFIG_T = moe_config>
void moe_mlp(const act_raw_t *xn, const beat_t *weights_one_time, int64_t router_first, const beat_t *experts,
             int64_t layer_first, act_raw_t *y, int32_t *routing, act_raw_t *hidden, act_raw_t *yq) {
#pragma HLS INLINE
  static_assert(CONFIG_T::top_k >= 1 && CONFIG_T::top_k <= CONFIG_T::experts, "top_k in 1..experts");
  const int N = CONFIG_T::n_tokens, D = CONFIG_T::dim, E = CONFIG_T::experts, K = CONFIG_T::top_k;
  const int L = CONFIG_T::lanes;
  const int64_t stride = CONFIG_T::expert_stride;
  static act_raw_t logits[NUM_TOKENS * NUM_EXPERTS];
  static act_raw_t gates[NUM_TOKENS][TOP_K];
  static acc_t mix[NUM_TOKENS * DIM];
  static int32_t queue_tok[NUM_TOKENS];
  static act_raw_t queue_gate[NUM_TOKENS];
#pragma HLS ARRAY_PARTITION variable = mix cyclic factor = ELEM_LANES
  hls::stream<TokenSlot> queues[NUM_EXPERTS];
#pragma HLS STREAM variable = queues depth = NUM_TOKENS
  act_raw_t *xq = y;  // the gathered rows of one expert; y is written only by the final combine

  linear_stream(xn, N, D, E, weights_one_time, router_first, FMT_WEIGHT_F, nullptr, 0, logits);
Route:
  for (int t = 0; t < N; ++t) {
    act_raw_t p[NUM_EXPERTS];
    int32_t chosen[TOP_K];  // local: the DRAM copy (routing) is written, never read back
#pragma HLS ARRAY_PARTITION variable = p complete
#pragma HLS ARRAY_PARTITION variable = chosen complete
    select_top_k<CONFIG_T>(logits + (acc_t)t * E, chosen);
    router_softmax<CONFIG_T>(logits + (acc_t)t * E, p);
    for (int k = 0; k < K; ++k) {
      gates[t][k] = p[chosen[k]];
      queues[chosen[k]].write(TokenSlot{t, k});
      routing[(acc_t)t * K + k] = chosen[k];
    }
  }
ClearMix:
  for (int i = 0; i < N * D; i += L) {
#pragma HLS PIPELINE II = 1
  ClearLanes:
    for (int j = 0; j < L; ++j) {
      if (i + j < N * D) mix[i + j] = 0;
    }
  }

Experts:
  for (int e = 0; e < E; ++e) {
    int rows = 0;
  Gather:  // this expert's queue -> its token rows, token ids and gates
    while (!queues[e].empty()) {
#pragma HLS LOOP_TRIPCOUNT min = 0 max = CONFIG_T::n_tokens
      const TokenSlot ts = queues[e].read();
      queue_tok[rows] = ts.token;
      queue_gate[rows] = gates[ts.token][ts.slot];
    GatherLanes:
      for (int d0 = 0; d0 < D; d0 += L) {
#pragma HLS PIPELINE II = 1
      GatherLane:
        for (int j = 0; j < L; ++j) {
          if (d0 + j < D) xq[(acc_t)rows * D + d0 + j] = xn[(acc_t)ts.token * D + d0 + j];
        }
      }
      ++rows;
    }
    if (rows > 0) {  // unused experts are never read from DRAM
      expert_compute<CONFIG_T>(experts, layer_first + e * stride, xq, rows, queue_tok, queue_gate, mix, hidden, yq);
    }
  }
Combine:
  for (int i = 0; i < N * D; i += L) {
#pragma HLS PIPELINE II = 1
  CombineLanes:
    for (int j = 0; j < L; ++j) {
      if (i + j < N * D) y[i + j] = narrow_act(mix[i + j], FMT_ACT_F);
    }
  }
}

}  // namespace edgemoe

#endif  // EDGEMOE_MOE_H_
