// Mixture-of-Experts MLP with a per-task router, top-k selection and per-expert token queues.
//
// 1. Router: logits = LN2(x) W_task^T through the shared linear unit; the task id picks W_task,
//    so switching task never reloads weights.
// 2. Top-k by logit (ties to the lower expert id), with explicit "taken" flags and an index that
//    always starts valid: no uninitialised reads, unlike the reference design's top-k.
// 3. Gates: softmax over all experts (exp2 unit, reciprocal), NOT renormalised over the top-k.
// 4. Patch reordering: tokens are queued per expert, and experts are processed one after the
//    other, so each expert's weights are loaded from DRAM once per layer; the next expert's block
//    is fetched into the other half of a ping-pong buffer while the current one computes.
// 5. out = narrow(sum_k gate_k * expert_k(x)).
// Twin: fixedpoint/ops.py router_softmax, top_k, combine_experts and emulator._moe_mlp.
#ifndef EDGEMOE_MOE_H_
#define EDGEMOE_MOE_H_

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
  static const int64_t expert_words = EXPERT_WORDS;
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

// Burst-copy one expert's weight block from DRAM into an on-chip buffer.
template <class CONFIG_T = moe_config>
void load_expert(const word_t *src, word_t *dst) {
LoadExpert:
  for (int64_t i = 0; i < CONFIG_T::expert_words; ++i) {
#pragma HLS PIPELINE II = 1
    dst[i] = src[i];
  }
}

struct TokenSlot {
  int32_t token;
  int32_t slot;
};

// xn: n_tokens x dim (LN2 output); router_w: this task's E x dim router; experts: this layer's
// E expert blocks; y: n_tokens x dim output; routing: n_tokens x top_k chosen expert ids.
template <class CONFIG_T = moe_config>
void moe_mlp(const act_raw_t *xn, const word_t *router_w, const word_t *experts, act_raw_t *y,
             int32_t *routing) {
  static_assert(CONFIG_T::top_k >= 1 && CONFIG_T::top_k <= CONFIG_T::experts, "top_k in 1..experts");
  const int N = CONFIG_T::n_tokens, D = CONFIG_T::dim, E = CONFIG_T::experts, K = CONFIG_T::top_k;
  const int H = CONFIG_T::hidden;
  static act_raw_t logits[CONFIG_T::n_tokens * CONFIG_T::experts];
  static act_raw_t gates[CONFIG_T::n_tokens][CONFIG_T::top_k];
  static acc_t mix[CONFIG_T::n_tokens * CONFIG_T::dim];
  static act_raw_t xq[CONFIG_T::n_tokens * CONFIG_T::dim];
  static act_raw_t hq[CONFIG_T::n_tokens * CONFIG_T::hidden];
  static act_raw_t yq[CONFIG_T::n_tokens * CONFIG_T::dim];
  static int32_t queue_tok[CONFIG_T::n_tokens];
  static int32_t queue_slot[CONFIG_T::n_tokens];
  static word_t wbuf[2][CONFIG_T::expert_words];  // ping-pong expert weight buffers
  hls::stream<TokenSlot> queues[CONFIG_T::experts];
#pragma HLS STREAM variable = queues depth = CONFIG_T::n_tokens

  linear_unit(xn, N, D, E, router_w, FMT_WEIGHT_F, nullptr, 0, logits);
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
  for (int64_t i = 0; i < (int64_t)N * D; ++i) mix[i] = 0;

  // Double buffering: while expert e computes from wbuf[cur], the next non-empty expert's block
  // is fetched into wbuf[1 - cur] (sequential here; a DATAFLOW region in hardware).
  int next = 0;
  while (next < E && queues[next].empty()) ++next;
  if (next < E) load_expert<CONFIG_T>(experts + (acc_t)next * CONFIG_T::expert_words, wbuf[0]);
  int cur = 0;
Experts:
  while (next < E) {
    const int e = next;
    next = e + 1;
    while (next < E && queues[next].empty()) ++next;
    if (next < E) load_expert<CONFIG_T>(experts + (acc_t)next * CONFIG_T::expert_words, wbuf[1 - cur]);
    const word_t *wb = wbuf[cur];
    int rows = 0;
  Gather:
    while (!queues[e].empty()) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = CONFIG_T::n_tokens
      const TokenSlot ts = queues[e].read();
      queue_tok[rows] = ts.token;
      queue_slot[rows] = ts.slot;
      for (int d = 0; d < D; ++d) xq[(acc_t)rows * D + d] = xn[(acc_t)ts.token * D + d];
      ++rows;
    }
    linear_unit(xq, rows, D, H, wb + EXP_OFF_FC1_W, FMT_WEIGHT_F, wb + EXP_OFF_FC1_B, FMT_BIAS_F, hq);
    gelu_buffer(hq, rows * H);
    linear_unit(hq, rows, H, D, wb + EXP_OFF_FC2_W, FMT_WEIGHT_F, wb + EXP_OFF_FC2_B, FMT_BIAS_F, yq);
  Scatter:
    for (int r = 0; r < rows; ++r) {
      const acc_t g = gates[queue_tok[r]][queue_slot[r]];
      for (int d = 0; d < D; ++d) mix[(acc_t)queue_tok[r] * D + d] += g * (acc_t)yq[(acc_t)r * D + d];
    }
    cur = 1 - cur;
  }
Combine:
  for (int64_t i = 0; i < (int64_t)N * D; ++i) y[i] = narrow_act(mix[i], FMT_ACT_F);
}

}  // namespace edgemoe

#endif  // EDGEMOE_MOE_H_
