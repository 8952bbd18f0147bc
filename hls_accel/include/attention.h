// Multi-head self-attention with a single-pass softmax.
//
// q is pre-scaled by log2(e)/sqrt(head_dim) while it is narrowed to the attn format, so scores
// u = q.k come out in log2 units. Each query row then walks the keys ONCE keeping
//   M   = running max of ceil(u)   (an integer, so rescaling is an exact power of two)
//   den = sum 2^(u - M)            (expo format)
//   acc = sum 2^(u - M) * v        (expo x attn fraction bits)
// and when M grows by d both sums are shifted right by d (the "rescale"). The output is
// acc * floor(2^SOFTMAX_RECIP_SHIFT / den), narrowed to act. ATTN_PAR rows are processed in
// parallel (Edge-MoE's 4-way attention parallelism). Twin: fixedpoint/ops.py attention.
#ifndef EDGEMOE_ATTENTION_H_
#define EDGEMOE_ATTENTION_H_

#include "datatypes.h"
#include "hls_math.h"

namespace edgemoe {

struct attention_config {
  static const int n_tokens = NUM_TOKENS, dim = DIM, heads = NUM_HEADS, head_dim = HEAD_DIM;
  static const int par = 4;  // query rows processed in parallel
  static const int lanes = ELEM_LANES;  // elements per cycle of the format conversion and output
  static const acc_t scale_raw = ATTN_SCALE_RAW;
};

// One query row against all keys of one head: the single-pass softmax-weighted sum of v.
template <class CONFIG_T>
void attention_row(const act_raw_t *q, const act_raw_t (*k)[CONFIG_T::head_dim],
                   const act_raw_t (*v)[CONFIG_T::head_dim], act_raw_t *out) {
  acc_t acc[CONFIG_T::head_dim];
#pragma HLS ARRAY_PARTITION variable = acc complete
  acc_t den = 0, m = 0;
  for (int d = 0; d < CONFIG_T::head_dim; ++d) acc[d] = 0;
Keys:
  for (int j = 0; j < CONFIG_T::n_tokens; ++j) {
#pragma HLS PIPELINE II = 1
    acc_t s = 0;
  Dot:
    for (int d = 0; d < CONFIG_T::head_dim; ++d) s += (acc_t)q[d] * (acc_t)k[j][d];
    const acc_t u = saturate<FMT_SCORE_W>(round_shift(s, 2 * FMT_ATTN_F - FMT_SCORE_F));
    const acc_t c = (u + (((acc_t)1 << FMT_SCORE_F) - 1)) >> FMT_SCORE_F;  // ceil in log2 units
    if (j == 0) {
      m = c;
    } else if (c > m) {  // rescale: exact power-of-two shift of both running sums
      const acc_t grow = c - m;
      const int sh = (int)(grow > MAX_ACC_SHIFT ? MAX_ACC_SHIFT : grow);
      den >>= sh;
      for (int d = 0; d < CONFIG_T::head_dim; ++d) acc[d] >>= sh;
      m = c;
    }
    const acc_t e = hls::exp2_neg(u - shl(m, FMT_SCORE_F));
    den += e;
  Accumulate:
    for (int d = 0; d < CONFIG_T::head_dim; ++d) acc[d] += e * (acc_t)v[j][d];
  }
  const acc_t r = (acc_t)hls::recip<SOFTMAX_RECIP_SHIFT>((uint64_t)den);
  const int shift_out = (FMT_EXPO_F + FMT_ATTN_F) + (SOFTMAX_RECIP_SHIFT - FMT_EXPO_F) - FMT_ACT_F;
Normalize:
  for (int d0 = 0; d0 < CONFIG_T::head_dim; d0 += CONFIG_T::lanes) {
#pragma HLS PIPELINE II = 1
  NormalizeLanes:
    for (int j = 0; j < CONFIG_T::lanes; ++j) {
      if (d0 + j < CONFIG_T::head_dim) out[d0 + j] = narrow_act(acc[d0 + j] * r, shift_out);
    }
  }
}

// One head's slice of q, k or v (columns col0 .. col0 + head_dim of every qkv row) times mul,
// narrowed by `shift` bits to the attn format; `lanes` elements per cycle, one slice at a time so
// each cycle reads each bank of the (cyclically partitioned) qkv buffer once.
template <class CONFIG_T>
void to_attn_format(const act_raw_t *qkv, int col0, acc_t mul, int shift, act_raw_t (*dst)[CONFIG_T::head_dim]) {
  const int HD = CONFIG_T::head_dim, L = CONFIG_T::lanes, n = CONFIG_T::n_tokens * CONFIG_T::head_dim;
ToAttnFormat:
  for (int i = 0; i < n; i += L) {
#pragma HLS PIPELINE II = 1
  ToAttnLanes:
    for (int j = 0; j < L; ++j) {
      if (i + j < n) {
        const int t = (i + j) / HD, d = (i + j) % HD;
        const acc_t v = (acc_t)qkv[(acc_t)t * 3 * CONFIG_T::dim + col0 + d] * mul;
        dst[t][d] = (act_raw_t)saturate<FMT_ATTN_W>(round_shift(v, shift));
      }
    }
  }
}

// qkv: n_tokens x 3*dim act (PyTorch layout: [q | k | v], heads contiguous inside each);
// out: n_tokens x dim act (heads concatenated).
template <class CONFIG_T = attention_config>
void attention(const act_raw_t *qkv, act_raw_t *out) {
  const int N = CONFIG_T::n_tokens, D = CONFIG_T::dim, HD = CONFIG_T::head_dim;
  static act_raw_t q[CONFIG_T::n_tokens][CONFIG_T::head_dim];
  static act_raw_t k[CONFIG_T::n_tokens][CONFIG_T::head_dim];
  static act_raw_t v[CONFIG_T::n_tokens][CONFIG_T::head_dim];
#pragma HLS ARRAY_PARTITION variable = q dim = 2 complete
#pragma HLS ARRAY_PARTITION variable = k dim = 2 complete
#pragma HLS ARRAY_PARTITION variable = v dim = 2 complete
Heads:
  for (int h = 0; h < CONFIG_T::heads; ++h) {
    // q scaled to log2 units, k and v as they are, each narrowed from act to the attn format
    to_attn_format<CONFIG_T>(qkv, h * HD, CONFIG_T::scale_raw, FMT_ACT_F + COEF_FRAC - FMT_ATTN_F, q);
    to_attn_format<CONFIG_T>(qkv, D + h * HD, 1, FMT_ACT_F - FMT_ATTN_F, k);
    to_attn_format<CONFIG_T>(qkv, 2 * D + h * HD, 1, FMT_ACT_F - FMT_ATTN_F, v);
  QueryRows:
    for (int t0 = 0; t0 < N; t0 += CONFIG_T::par) {
    ParallelRows:
      for (int p = 0; p < CONFIG_T::par; ++p) {
#pragma HLS UNROLL
        const int t = t0 + p;
        if (t < N) attention_row<CONFIG_T>(q[t], k, v, out + (acc_t)t * D + h * HD);
      }
    }
  }
}

}  // namespace edgemoe

#endif  // EDGEMOE_ATTENTION_H_
