// SPDX-License-Identifier: Apache-2.0
// GELU as ReLU minus a correction: GELU(x) = ReLU(x) - c(|x|), c(a) = a * Phi(-a), tabulated at
// GELU_TABLE_SIZE points a = i / 2^GELU_STEP_SHIFT (177 entries, step 1/32, up to 5.5) and
// linearly interpolated; c is 0 beyond the table. Twin: fixedpoint/ops.py gelu.
#ifndef EDGEMOE_GELU_H_
#define EDGEMOE_GELU_H_

#include "datatypes.h"

namespace edgemoe {

struct gelu_config {
  static const int step_bits = FMT_ACT_F - GELU_STEP_SHIFT;  // fraction bits below one table step
  static const int lanes = ELEM_LANES;                        // elements per cycle of gelu_buffer
};

template <class CONFIG_T = gelu_config>
static inline act_raw_t gelu(act_raw_t x) {
  const acc_t a = x < 0 ? -(acc_t)x : (acc_t)x;
  const acc_t idx = a >> CONFIG_T::step_bits;
  acc_t corr = 0;
  if (idx < GELU_TABLE_SIZE) {
    const int i = (int)idx;
    const acc_t base = GELU_CORR_TABLE[i];
    const acc_t next = (i + 1 < GELU_TABLE_SIZE) ? (acc_t)GELU_CORR_TABLE[i + 1] : 0;
    const acc_t fr = a & (((acc_t)1 << CONFIG_T::step_bits) - 1);
    corr = base + (((next - base) * fr) >> CONFIG_T::step_bits);
  }
  const acc_t relu = x > 0 ? (acc_t)x : 0;
  return (act_raw_t)(relu - corr);
}

// In-place GELU over n activations, ELEM_LANES per cycle.
template <class CONFIG_T = gelu_config>
void gelu_buffer(act_raw_t *buf, int n) {
Gelu:
  for (int i = 0; i < n; i += CONFIG_T::lanes) {
#pragma HLS PIPELINE II = 1
  GeluLanes:
    for (int j = 0; j < CONFIG_T::lanes; ++j) {
      if (i + j < n) buf[i + j] = gelu<CONFIG_T>(buf[i + j]);
    }
  }
}

}  // namespace edgemoe

#endif  // EDGEMOE_GELU_H_
