// SPDX-License-Identifier: Apache-2.0
// Multi-head self-attention with a single-pass softmax.
//
// q is pre-scaled by log2(e)/sqrt(head_dim) while it is narrowed to the attn format, so scores
// u = q.k come out in log2 units. Each query row then walks the keys ONCE keeping
//   M   = running max of ceil(u)   (an integer, so rescaling is an exact power of two)
//   den = sum 2^(u - M)            (expo format)
//   acc = sum 2^(u - M) * v        (expo x attn fraction bits)
// and when M grows by d both sums are shifted right by d (the "rescale"). The output is
// acc * floor(2^SOFTMAX_RECIP_SHIFT / den), narrowed to act. ATTENTION_ROWS query rows run in
// parallel (Edge-MoE uses 4; interface.py says why we use fewer). Twin: fixedpoint/ops.py attention.
//
// Datapath widths are exact (datatypes.h): q, k, v are attn_raw_t (FMT_ATTN_W bits), a row's dot
// product attn_dot_t, the running sums attn_acc_t; none can overflow, so the result is the
// emulator's int64 arithmetic bit for bit. The key loop carries the rescale (a variable shift and
// an add of the attn_acc_t sums) from one key to the next: that recurrence, not the port count,
// sets its initiation interval (accel/latency_model.py assumes 2 cycles at 300 MHz).
#ifndef EDGEMOE_ATTENTION_H_
#define EDGEMOE_ATTENTION_H_

#include "datatypes.h"
#include "edgemoe_math.h"

namespace edgemoe {

struct attention_config {
  static const int n_tokens = NUM_TOKENS, dim = DIM, heads = NUM_HEADS, head_dim = HEAD_DIM;
  static const int par = ATTENTION_ROWS;  // query rows processed in parallel (interface.py)
  static const int lanes = ELEM_LANES;    // elements per cycle of the format conversion and output
  static const acc_t scale_raw = ATTN_SCALE_RAW;
};

// One query row against all keys of one head: the single-pass softmax-weighted sum of v.
// k and v are reshaped into one head_dim-wide word per token, so each key costs one read of each.
static void attention_row(const attn_raw_t *q_row, const attn_raw_t (*k)[HEAD_DIM],
                          const attn_raw_t (*v)[HEAD_DIM], act_raw_t *out) {
#pragma HLS INLINE off
  attn_raw_t q_reg[HEAD_DIM];
  attn_acc_t row_acc[HEAD_DIM];
#pragma HLS ARRAY_PARTITION variable = q_reg complete
#pragma HLS ARRAY_PARTITION variable = row_acc complete
  acc_t den = 0, m = 0;
LoadQuery:
  for (int d = 0; d < HEAD_DIM; ++d) {
#pragma HLS UNROLL
    q_reg[d] = q_row[d];
    row_acc[d] = 0;
  }
Keys:
  for (int j = 0; j < NUM_TOKENS; ++j) {
#pragma HLS PIPELINE II = 2
    attn_dot_t s = 0;
  Dot:
    for (int d = 0; d < HEAD_DIM; ++d) s += q_reg[d] * k[j][d];
    const acc_t u = saturate<FMT_SCORE_W>(round_shift((acc_t)s, 2 * FMT_ATTN_F - FMT_SCORE_F));
    const acc_t c = (u + (((acc_t)1 << FMT_SCORE_F) - 1)) >> FMT_SCORE_F;  // ceil in log2 units
    if (j == 0) {
      m = c;
    } else if (c > m) {  // rescale: exact power-of-two shift of both running sums
      const acc_t grow = c - m;
      // Shifting an ATTN_ACC_W-bit value right by >= ATTN_ACC_W - 1 leaves its sign, as the
      // emulator's int64 shift by up to MAX_ACC_SHIFT does: capping the shift changes no bit.
      const int sh = (int)(grow > ATTN_ACC_W - 1 ? ATTN_ACC_W - 1 : grow);
      den >>= sh;
    Rescale:
      for (int d = 0; d < HEAD_DIM; ++d) row_acc[d] >>= sh;
      m = c;
    }
    const expo_raw_t e = (expo_raw_t)exp2_neg(u - shl(m, FMT_SCORE_F));
    den += (acc_t)e;
  Accumulate:
    for (int d = 0; d < HEAD_DIM; ++d) row_acc[d] += e * v[j][d];
  }
  const acc_t r = (acc_t)recip<SOFTMAX_RECIP_SHIFT>((uint64_t)den);
  const int shift_out = (FMT_EXPO_F + FMT_ATTN_F) + (SOFTMAX_RECIP_SHIFT - FMT_EXPO_F) - FMT_ACT_F;
Normalize:
  for (int d0 = 0; d0 < HEAD_DIM; d0 += ELEM_LANES) {
#pragma HLS PIPELINE II = 1
  NormalizeLanes:
    for (int j = 0; j < ELEM_LANES; ++j) {
      if (d0 + j < HEAD_DIM) out[d0 + j] = narrow_act((acc_t)row_acc[d0 + j] * r, shift_out);
    }
  }
}

// One head's slice of q, k or v (columns col0 .. col0 + head_dim of every qkv row) times mul,
// narrowed by `shift` bits to the attn format; `lanes` elements per cycle, one slice at a time so
// each cycle reads each bank of the (cyclically partitioned) qkv buffer once and writes `lanes`
// elements of one reshaped row (byte write enables: the attn format is whole bytes).
template <class CONFIG_T>
void to_attn_format(const act_raw_t *qkv, int col0, acc_t mul, int shift, attn_raw_t (*dst)[HEAD_DIM]) {
  const int HD = CONFIG_T::head_dim, L = CONFIG_T::lanes, n = CONFIG_T::n_tokens * CONFIG_T::head_dim;
ToAttnFormat:
  for (int i = 0; i < n; i += L) {
#pragma HLS PIPELINE II = 1
  ToAttnLanes:
    for (int j = 0; j < L; ++j) {
      if (i + j < n) {
        const int t = (i + j) / HD, d = (i + j) % HD;
        const acc_t v = (acc_t)qkv[(acc_t)t * 3 * CONFIG_T::dim + col0 + d] * mul;
        dst[t][d] = (attn_raw_t)saturate<FMT_ATTN_W>(round_shift(v, shift));
      }
    }
  }
}

// qkv: n_tokens x 3*dim act (PyTorch layout: [q | k | v], heads contiguous inside each);
// out: n_tokens x dim act (heads concatenated).
template <class CONFIG_T = attention_config>
void attention(const act_raw_t *qkv, act_raw_t *out) {
#pragma HLS INLINE off
  const int N = CONFIG_T::n_tokens, D = CONFIG_T::dim, HD = CONFIG_T::head_dim;
  static attn_raw_t q[NUM_TOKENS][HEAD_DIM];
  static attn_raw_t k[NUM_TOKENS][HEAD_DIM];
  static attn_raw_t v[NUM_TOKENS][HEAD_DIM];
#pragma HLS ARRAY_RESHAPE variable = q complete dim = 2
#pragma HLS ARRAY_RESHAPE variable = k complete dim = 2
#pragma HLS ARRAY_RESHAPE variable = v complete dim = 2
  // ATTENTION_ROWS row units, no more: the DSP budget of accel/resources.py counts exactly these.
#pragma HLS ALLOCATION function instances = attention_row limit = ATTENTION_ROWS
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
        if (t < N) attention_row(q[t], k, v, out + (acc_t)t * D + h * HD);
      }
    }
  }
}

}  // namespace edgemoe

#endif  // EDGEMOE_ATTENTION_H_
