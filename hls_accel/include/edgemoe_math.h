// SPDX-License-Identifier: Apache-2.0
// Our integer math for the accelerator: no floating point anywhere in the datapath, so the numpy
// emulator can reproduce each function exactly (fixedpoint/ops.py names the Python twin of every
// function here). Loops have constant trip counts so each unit synthesises to a fixed pipeline.
// These are the project's own functions in the project's namespace: nothing here stands in for
// a vendor header, so the Vitis staging (vitis/run_hls.tcl) keeps this file.
#ifndef EDGEMOE_MATH_H_
#define EDGEMOE_MATH_H_

#include <stdint.h>

#include "datatypes.h"

namespace edgemoe {

// Floor division by a positive divisor (C's '/' truncates toward zero). ops.floor_div.
static inline acc_t floor_div(acc_t a, acc_t b) {
  acc_t q = a / b;
  if ((a % b) < 0) q -= 1;
  return q;
}

// floor(sqrt(v)) by the bit-serial (digit-by-digit) method, one result bit per step. ops.isqrt.
static inline uint64_t isqrt(uint64_t v) {
  uint64_t rem = v, root = 0;
Isqrt:
  for (int i = 31; i >= 0; --i) {
#pragma HLS PIPELINE II = 1
    const uint64_t trial = (root << (i + 1)) + ((uint64_t)1 << (2 * i));
    if (trial <= rem) {
      rem -= trial;
      root |= (uint64_t)1 << i;
    }
  }
  return root;
}

// floor(2^SHIFT / den) for den > 0 by restoring division, one quotient bit per step. ops.recip.
template <int SHIFT>
static inline uint64_t recip(uint64_t den) {
  uint64_t rem = 0, quo = 0;
Recip:
  for (int i = SHIFT; i >= 0; --i) {
#pragma HLS PIPELINE II = 1
    rem = (rem << 1) | (i == SHIFT ? 1u : 0u);
    if (rem >= den) {
      rem -= den;
      quo |= (uint64_t)1 << i;
    }
  }
  return quo;
}

// 2^t for t <= 0 given in score format (FMT_SCORE_F fraction bits); result in expo format.
// t = -n + f: 2^f from EXP2_TABLE (top EXP2_LUT_BITS bits of f) interpolated on the rest, then
// shifted right by n. ops.exp2_neg.
static inline acc_t exp2_neg(acc_t t) {
  const int fbits = FMT_SCORE_F;
  const int lo_bits = fbits - EXP2_LUT_BITS;
  const acc_t n = -(t >> fbits);
  const acc_t fp = t & (((acc_t)1 << fbits) - 1);
  const int idx = (int)(fp >> lo_bits);
  const acc_t lo = fp & (((acc_t)1 << lo_bits) - 1);
  const acc_t base = EXP2_TABLE[idx];
  const acc_t v = base + (((EXP2_TABLE[idx + 1] - base) * lo) >> lo_bits);
  if (n > EXP2_MAX_SHIFT) return 0;
  return v >> n;
}

}  // namespace edgemoe

#endif  // EDGEMOE_MATH_H_
