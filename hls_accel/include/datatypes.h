// SPDX-License-Identifier: Apache-2.0
// The number formats of SPEC §3 in one place, and the rounding rules every kernel uses.
//
// The ap_fixed typedefs name each format (widths come from the generated edgemoe_interface.h,
// i.e. from edgemoe_ros/accel/interface.py). The kernels compute on the *raw* two's-complement
// integers of those formats: products go into an exact 64-bit accumulator and are narrowed in one
// explicit step (round half up = AP_RND, then clip = AP_SAT). Keeping every rounding explicit is
// what lets the numpy emulator (edgemoe_ros/fixedpoint/ops.py) reproduce the kernels bit for bit.
#ifndef EDGEMOE_DATATYPES_H_
#define EDGEMOE_DATATYPES_H_

#include <stdint.h>

#include <cmath>

#include "ap_fixed.h"
#include "ap_int.h"
// Angle brackets: the generated header is looked up on the -I path (GEN_DIR first), never
// next to this file, so a build for another model picks up its own header.
#include <edgemoe_interface.h>

namespace edgemoe {

// ---- formats (SPEC §3 and internal)
typedef ap_fixed<FMT_ACT_W, FMT_ACT_I, AP_RND, AP_SAT> act_t;                // activations
typedef ap_fixed<FMT_WEIGHT_W, FMT_WEIGHT_I> weight_t;                       // linear weights
typedef ap_fixed<FMT_ATTN_BIAS_W, FMT_ATTN_BIAS_I> attn_bias_t;              // qkv / proj bias
typedef ap_fixed<FMT_BIAS_W, FMT_BIAS_I> bias_t;                             // other biases, LN, pos
typedef ap_fixed<FMT_PATCH_WEIGHT_W, FMT_PATCH_WEIGHT_I> patch_weight_t;     // patch embedding
typedef ap_ufixed<FMT_PIXEL_W, FMT_PIXEL_I> pixel_t;                         // input pixels
typedef ap_fixed<FMT_ATTN_W, FMT_ATTN_I, AP_RND, AP_SAT> attn_t;             // q, k, v operands
typedef ap_fixed<FMT_SCORE_W, FMT_SCORE_I, AP_RND, AP_SAT> score_t;          // log2-unit scores
typedef ap_ufixed<FMT_EXPO_W, FMT_EXPO_I> expo_t;                            // exp2 results

// ---- raw containers
typedef int32_t act_raw_t;   // raw bits of act_t (and of attn_t / score_t, which fit in 32 bits)
typedef int16_t word_t;      // one word of a weight buffer (every stored format is <= 16 bits)
typedef int64_t acc_t;       // exact accumulator of the narrow, off-datapath steps (rounding, LN, router)

// ---- exact-width datapath types (widths from accel_dims in interface.py): the wide MAC arrays
// multiply and sum at these widths, which never overflow (interface.py says why), so the results
// equal the emulator's int64 arithmetic bit for bit while the multipliers map to 1-2 DSPs each.
//
// EDGEMOE_NATIVE_INT (hls_accel/Makefile, the C-simulation *library* only): the same values in
// native 64-bit integers, because the ap types' software emulation makes a SPEC-model frame ~40x
// slower (1.3 s -> 66 s). Since no exact-width sum can overflow, both give the same bits; the
// testbench and the Vitis build use the ap types, and test_hls_build.py compares that build with
// the emulator.
#ifdef EDGEMOE_NATIVE_INT
typedef int64_t act_int_t;
typedef int64_t wgt_int_t;
typedef int64_t lin_acc_t;
typedef int64_t attn_raw_t;
typedef int64_t attn_dot_t;
typedef int64_t expo_raw_t;
typedef int64_t attn_acc_t;
static const bool EXACT_WIDTH_DATAPATH = false;
#else
typedef ap_int<FMT_ACT_W> act_int_t;         // one activation operand
typedef ap_int<16> wgt_int_t;               // one weight operand: a whole word_t (every stored format fits)
typedef ap_int<LIN_ACC_W> lin_acc_t;         // linear unit accumulator
typedef ap_int<FMT_ATTN_W> attn_raw_t;       // q, k, v operands (attn format raw bits)
typedef ap_int<ATTN_DOT_W> attn_dot_t;       // q.k over one head
typedef ap_uint<FMT_EXPO_W> expo_raw_t;      // exp2 result (expo format raw bits)
typedef ap_int<ATTN_ACC_W> attn_acc_t;       // sum of expo x v over the keys
static const bool EXACT_WIDTH_DATAPATH = true;
#endif

static_assert(FMT_ACT_W == 32, "act_raw_t holds the act format");
// The raw datapath implements exactly these ap_fixed formats and modes:
static_assert(act_t::width == 32 && act_t::iwidth == FMT_ACT_I, "act_t is the act format");
static_assert(act_t::qmode == AP_RND && act_t::omode == AP_SAT, "narrow_act rounds (AP_RND) and saturates (AP_SAT)");
static_assert(weight_t::width == FMT_WEIGHT_W && bias_t::iwidth == FMT_BIAS_I, "stored formats");
static_assert(FMT_ATTN_W <= 32 && FMT_SCORE_W <= 32, "attn/score raw values must fit act_raw_t");
static_assert(FMT_WEIGHT_W <= 16 && FMT_BIAS_W <= 16 && FMT_ATTN_BIAS_W <= 16 &&
                  FMT_PATCH_WEIGHT_W <= 16,
              "stored formats must fit one 16-bit weight word");

// ---- rounding and saturation (mirrored by fixedpoint/ops.py: round_shift, saturate, narrow)

// x * 2^k without the undefined left shift of a negative value.
static inline acc_t shl(acc_t x, int k) { return x * ((acc_t)1 << k); }

// floor((x + 2^(s-1)) / 2^s): round to nearest, ties toward +inf (AP_RND). s in 0..62.
static inline acc_t round_shift(acc_t x, int s) {
  if (s <= 0) return x;
  return (x + ((acc_t)1 << (s - 1))) >> s;  // arithmetic shift: floor for negative values
}

// Clip to a signed W-bit two's-complement range (AP_SAT).
template <int W>
static inline acc_t saturate(acc_t x) {
  const acc_t hi = ((acc_t)1 << (W - 1)) - 1;
  const acc_t lo = -((acc_t)1 << (W - 1));
  return x > hi ? hi : (x < lo ? lo : x);
}

// Round an accumulator down by s fraction bits and saturate to act.
static inline act_raw_t narrow_act(acc_t acc, int s) {
  return (act_raw_t)saturate<FMT_ACT_W>(round_shift(acc, s));
}

// Residual connection: saturating add of two activations.
static inline act_raw_t add_sat(act_raw_t a, act_raw_t b) {
  return (act_raw_t)saturate<FMT_ACT_W>((acc_t)a + (acc_t)b);
}

// Raw act bits -> real value, for test benches and debug prints only (never in the datapath).
// (Not via act_t::to_double: hls4ml's implementation reads an uninitialised temporary.)
static inline double act_to_double(act_raw_t raw) { return std::ldexp((double)raw, -FMT_ACT_F); }

}  // namespace edgemoe

#endif  // EDGEMOE_DATATYPES_H_
