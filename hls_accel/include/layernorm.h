// SPDX-License-Identifier: Apache-2.0
// LayerNorm over the last axis in integer arithmetic (biased variance, eps from the model):
//   mean = floor(sum / D); dev = x - mean; var = floor(sum((dev >> LN_SQ_SHIFT)^2) / D)
//   rstd = floor(2^(LN_STD_FRAC + LN_RSTD_FRAC) / isqrt(var + eps))
//   y = narrow((round_shift(dev * rstd, LN_RSTD_FRAC) * gamma + beta << act_frac) >> bias_frac)
// Three passes per row (sum, variance, output), each ELEM_LANES elements per cycle; integer sums
// are exact, so the lane split does not change a bit. Twin: fixedpoint/ops.py layernorm.
#ifndef EDGEMOE_LAYERNORM_H_
#define EDGEMOE_LAYERNORM_H_

#include "datatypes.h"
#include "edgemoe_math.h"

namespace edgemoe {

struct layernorm_config {
  static const int dim = DIM;
  static const int eps_raw = LN_EPS_RAW;
  static const int lanes = ELEM_LANES;  // elements per cycle of each pass
};

template <class CONFIG_T = layernorm_config>
void layernorm(const act_raw_t *in, act_raw_t *out, int rows, const word_t *gamma, const word_t *beta) {
#pragma HLS INLINE off
  const int L = CONFIG_T::lanes;
LnRows:
  for (int r = 0; r < rows; ++r) {
    const act_raw_t *x = in + (acc_t)r * CONFIG_T::dim;
    act_raw_t *y = out + (acc_t)r * CONFIG_T::dim;
    acc_t sum = 0;
  LnSum:
    for (int i = 0; i < CONFIG_T::dim; i += L) {
#pragma HLS PIPELINE II = 1
    LnSumLanes:
      for (int j = 0; j < L; ++j) {
        if (i + j < CONFIG_T::dim) sum += x[i + j];
      }
    }
    const acc_t mean = floor_div(sum, CONFIG_T::dim);
    acc_t sq = 0;
  LnVar:
    for (int i = 0; i < CONFIG_T::dim; i += L) {
#pragma HLS PIPELINE II = 1
    LnVarLanes:
      for (int j = 0; j < L; ++j) {
        if (i + j < CONFIG_T::dim) {
          const acc_t dq = ((acc_t)x[i + j] - mean) >> LN_SQ_SHIFT;
          sq += dq * dq;
        }
      }
    }
    const acc_t var = floor_div(sq, CONFIG_T::dim);
    const uint64_t std_raw = isqrt((uint64_t)(var + CONFIG_T::eps_raw));
    const acc_t rstd = (acc_t)recip<LN_STD_FRAC + LN_RSTD_FRAC>(std_raw);
  LnOut:  // II 2: gamma and beta of every lane come from the WORDS_PER_BEAT-bank parameter cache
    for (int i = 0; i < CONFIG_T::dim; i += L) {
#pragma HLS PIPELINE II = 2
    LnOutLanes:
      for (int j = 0; j < L; ++j) {
        if (i + j < CONFIG_T::dim) {
          const acc_t xhat = round_shift(((acc_t)x[i + j] - mean) * rstd, LN_RSTD_FRAC);
          const acc_t acc = xhat * (acc_t)gamma[i + j] + shl(beta[i + j], FMT_ACT_F);
          y[i + j] = narrow_act(acc, FMT_BIAS_F);
        }
      }
    }
  }
}

}  // namespace edgemoe

#endif  // EDGEMOE_LAYERNORM_H_
