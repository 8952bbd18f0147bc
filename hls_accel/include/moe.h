// Mixture-of-Experts MLP with a per-task router, top-k selection and per-expert token queues.
//
// 1. Router: logits = LN2(x) W_task^T through the shared linear unit; the task id picks W_task,
//    so switching task never reloads weights.
// 2. Top-k by logit (ties to the lower expert id), with explicit "taken" flags and an index that
//    always starts valid: no uninitialised reads, unlike the reference design's top-k.
// 3. Gates: softmax over all experts (exp2 unit, reciprocal), NOT renormalised over the top-k.
// 4. Patch reordering: tokens are queued per expert, and the experts that got tokens are processed
//    one after the other, so each used expert's weights are loaded from DRAM once per layer, as one
//    aligned burst of whole AXI beats; unused experts are never loaded. The next used expert's
//    block bursts into one half of a ping-pong buffer while the current expert computes from the
//    other half (expert_step, a DATAFLOW region; the C-simulation runs the two in sequence).
// 5. out = narrow(sum_k gate_k * expert_k(x)).
// Twin: fixedpoint/ops.py router_softmax, top_k, combine_experts and emulator._moe_mlp.
#ifndef EDGEMOE_MOE_H_
#define EDGEMOE_MOE_H_

#include "burst.h"
#include "datatypes.h"
#include "gelu.h"
#include "hls_math.h"
#include "hls_stream.h"
#include "linear.h"

#if !defined(__HLS_SYN__) && !defined(EDGEMOE_OWN_HLS_STREAM)
#error "C-simulation must use hls_accel/include/hls_stream.h (check the include path order)"
#endif

namespace edgemoe {

struct moe_config {
  static const int n_tokens = NUM_TOKENS, dim = DIM, experts = NUM_EXPERTS, top_k = TOP_K;
  static const int hidden = EXPERT_HIDDEN;
  static const int64_t expert_words = EXPERT_WORDS;          // one expert's block
  static const int64_t expert_stride = EXPERT_STRIDE_WORDS;  // block to block (burst-aligned)
  static const int lanes = ELEM_LANES;                       // elements per cycle of copies and sums
};

// Indices of the k largest logits, best first; ties go to the lower expert id.
template <class CONFIG_T = moe_config>
void select_top_k(const act_raw_t *logits, int32_t *chosen) {
  bool taken[CONFIG_T::experts];
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
  acc_t ex[CONFIG_T::experts];
  acc_t sum = 0;
Exp:
  for (int e = 0; e < CONFIG_T::experts; ++e) {
#pragma HLS PIPELINE II = 1
    const acc_t t = round_shift(((acc_t)logits[e] - mx) * LOG2E_RAW, FMT_ACT_F + COEF_FRAC - FMT_SCORE_F);
    ex[e] = hls::exp2_neg(t);
    sum += ex[e];
  }
  const acc_t r = (acc_t)hls::recip<SOFTMAX_RECIP_SHIFT>((uint64_t)sum);
Normalize:
  for (int e = 0; e < CONFIG_T::experts; ++e) {
    gates[e] = (act_raw_t)round_shift(ex[e] * r, SOFTMAX_RECIP_SHIFT - FMT_ACT_F);
  }
}

struct TokenSlot {
  int32_t token;
  int32_t slot;
};

// One expert on its queued tokens: fc1 -> GELU -> fc2 with weights from the on-chip block wb, then
// mix[token] += gate * y for each queued (token, slot).
template <class CONFIG_T = moe_config>
void expert_compute(const word_t *wb, const act_raw_t *xq, int rows, const int32_t *queue_tok,
                    const act_raw_t *queue_gate, acc_t *mix) {
  const int D = CONFIG_T::dim, H = CONFIG_T::hidden, L = CONFIG_T::lanes;
  static act_raw_t hq[CONFIG_T::n_tokens * CONFIG_T::hidden];
  static act_raw_t yq[CONFIG_T::n_tokens * CONFIG_T::dim];
#pragma HLS ARRAY_PARTITION variable = hq cyclic factor = CONFIG_T::lanes
#pragma HLS ARRAY_PARTITION variable = yq cyclic factor = CONFIG_T::lanes
  linear_onchip(xq, rows, D, H, wb + EXP_OFF_FC1_W, FMT_WEIGHT_F, wb + EXP_OFF_FC1_B, FMT_BIAS_F, hq);
  gelu_buffer(hq, rows * H);
  linear_onchip(hq, rows, H, D, wb + EXP_OFF_FC2_W, FMT_WEIGHT_F, wb + EXP_OFF_FC2_B, FMT_BIAS_F, yq);
Scatter:
  for (int r = 0; r < rows; ++r) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = CONFIG_T::n_tokens
    const acc_t g = queue_gate[r];
    acc_t *m = mix + (acc_t)queue_tok[r] * D;
    const act_raw_t *yr = yq + (acc_t)r * D;
  ScatterLanes:
    for (int d0 = 0; d0 < D; d0 += L) {
#pragma HLS PIPELINE II = 1
    ScatterLane:
      for (int j = 0; j < L; ++j) {
        if (d0 + j < D) m[d0 + j] += g * (acc_t)yr[d0 + j];
      }
    }
  }
}

// One ping-pong step: the next used expert's block bursts into `fill` while the current expert
// computes from `drain`. The two tasks share no data, so in hardware they run concurrently.
template <class CONFIG_T = moe_config>
void expert_step(const beat_t *experts, int64_t next_first, int64_t next_words, word_t *fill, const word_t *drain,
                 const act_raw_t *xq, int rows, const int32_t *queue_tok, const act_raw_t *queue_gate, acc_t *mix) {
#pragma HLS DATAFLOW
  burst_read(experts, next_first, next_words, fill);
  expert_compute<CONFIG_T>(drain, xq, rows, queue_tok, queue_gate, mix);
}

// xn: n_tokens x dim (LN2 output); router from word router_first of the one-time weights (this
// task's E x dim matrix); this layer's E expert blocks from word layer_first of the experts buffer;
// y: n_tokens x dim output; routing: n_tokens x top_k chosen expert ids.
template <class CONFIG_T = moe_config>
void moe_mlp(const act_raw_t *xn, const beat_t *weights_one_time, int64_t router_first, const beat_t *experts,
             int64_t layer_first, act_raw_t *y, int32_t *routing) {
  static_assert(CONFIG_T::top_k >= 1 && CONFIG_T::top_k <= CONFIG_T::experts, "top_k in 1..experts");
  const int N = CONFIG_T::n_tokens, D = CONFIG_T::dim, E = CONFIG_T::experts, K = CONFIG_T::top_k;
  const int L = CONFIG_T::lanes;
  const int64_t stride = CONFIG_T::expert_stride, words = CONFIG_T::expert_words;
  static act_raw_t logits[CONFIG_T::n_tokens * CONFIG_T::experts];
  static act_raw_t gates[CONFIG_T::n_tokens][CONFIG_T::top_k];
  static acc_t mix[CONFIG_T::n_tokens * CONFIG_T::dim];
  static act_raw_t xq[CONFIG_T::n_tokens * CONFIG_T::dim];
  static int32_t queue_tok[CONFIG_T::n_tokens];
  static act_raw_t queue_gate[CONFIG_T::n_tokens];
  static word_t wbuf_a[CONFIG_T::expert_words];  // ping-pong expert weight buffers
  static word_t wbuf_b[CONFIG_T::expert_words];
#pragma HLS ARRAY_PARTITION variable = mix cyclic factor = CONFIG_T::lanes
#pragma HLS ARRAY_PARTITION variable = xq cyclic factor = CONFIG_T::lanes
#pragma HLS ARRAY_PARTITION variable = wbuf_a cyclic factor = linear_config::tile
#pragma HLS ARRAY_PARTITION variable = wbuf_b cyclic factor = linear_config::tile
  hls::stream<TokenSlot> queues[CONFIG_T::experts];
#pragma HLS STREAM variable = queues depth = CONFIG_T::n_tokens

  linear_stream(xn, N, D, E, weights_one_time, router_first, FMT_WEIGHT_F, nullptr, 0, logits);
Route:
  for (int t = 0; t < N; ++t) {
    act_raw_t p[CONFIG_T::experts];
    int32_t *chosen = routing + (acc_t)t * K;
    select_top_k<CONFIG_T>(logits + (acc_t)t * E, chosen);
    router_softmax<CONFIG_T>(logits + (acc_t)t * E, p);
    for (int k = 0; k < K; ++k) {
      gates[t][k] = p[chosen[k]];
      queues[chosen[k]].write(TokenSlot{t, k});
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

  int next = 0;
FindFirstUsed:
  while (next < E && queues[next].empty()) ++next;
  burst_read(experts, layer_first + next * stride, next < E ? words : 0, wbuf_a);  // first block: exposed
  int step = 0;
Experts:
  while (next < E) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = CONFIG_T::experts
    const int e = next;
    next = e + 1;
  FindNextUsed:
    while (next < E && queues[next].empty()) ++next;
    int rows = 0;
  Gather:  // this expert's queue -> its token rows, token ids and gates
    while (!queues[e].empty()) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = CONFIG_T::n_tokens
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
    const int64_t next_first = layer_first + next * stride;
    const int64_t next_words = next < E ? words : 0;
    if (step % 2 == 0) {
      expert_step<CONFIG_T>(experts, next_first, next_words, wbuf_b, wbuf_a, xq, rows, queue_tok, queue_gate, mix);
    } else {
      expert_step<CONFIG_T>(experts, next_first, next_words, wbuf_a, wbuf_b, xq, rows, queue_tok, queue_gate, mix);
    }
    ++step;
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
