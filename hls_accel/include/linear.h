// SPDX-License-Identifier: Apache-2.0
// The one shared linear unit (Edge-MoE's key resource saving): y = x W^T + b for every linear
// layer of the model (patch embedding, qkv, proj, dense MLP, router, experts), in TILE x TILE
// weight tiles. The TILE x TILE multiplies of one row are one fully unrolled array of DSPs, applied
// to every row (token) held on chip, so weights stream from DRAM exactly once per layer.
//
// Weight movement, outermost first:
// * band: the TILE output rows of one output group, TILE x in_dim words, contiguous in the
//   row-major (PyTorch) layout, so one aligned burst of whole AXI beats (burst.h). linear_stream
//   double-buffers bands: group g+1's band bursts in while group g computes (band_step, a DATAFLOW
//   region; the C-simulation runs its two tasks one after the other, with the same result).
//   Expert layers stream their bands the same way (moe.h): no expert block is ever held whole.
// * tile register: the TILE x TILE tile of a band, fetched one TILE-word row per cycle into the
//   idle half of a register ping-pong while the other half multiplies (the RowsFetch loop), so
//   each input tile costs max(rows, TILE) cycles.
//
// Arithmetic: act (FMT_ACT_F frac) x weight (w_frac) products summed exactly in a 64-bit
// accumulator, bias aligned to act_frac + w_frac, one narrowing to act at the end; integer sums
// are exact, so the loop order does not change a bit. Twin: fixedpoint/ops.py linear.
#ifndef EDGEMOE_LINEAR_H_
#define EDGEMOE_LINEAR_H_

#include <cassert>

#include "burst.h"
#include "datatypes.h"
#include "hls_vector.h"

namespace edgemoe {

struct linear_config {
  static const int tile = LINEAR_TILE;      // 16 x 16 weight tiles (interface.py)
  static const int max_rows = NUM_TOKENS;   // rows held on chip (tokens of one image)
  static const int max_in = LINEAR_MAX_IN;  // widest streamed input (band = tile x max_in words)
};
typedef hls::vector<lin_acc_t, LINEAR_TILE> lin_acc_vec;  // one row's TILE output accumulators
typedef hls::vector<word_t, LINEAR_TILE> word_vec;        // one weight-tile row
typedef hls::vector<act_raw_t, LINEAR_TILE> act_vec;      // one input-tile row

// One output group: y[:, ot .. ot+TILE) from the group's band (TILE rows x in_dim, row-major;
// rows past out_dim are never read).
template <class CONFIG_T = linear_config>
void linear_group(const act_raw_t *x, int rows, int in_dim, int out_dim, int ot, const word_t *band, int w_frac,
                  const word_t *bias, int bias_frac, act_raw_t *y) {
  const int T = CONFIG_T::tile;
#ifndef __SYNTHESIS__
  assert(rows >= 0 && rows <= CONFIG_T::max_rows && "linear_unit: more rows than the on-chip buffer");
#endif
  static lin_acc_vec acc[NUM_TOKENS];  // one wide word per row: read and written once per cycle
  word_vec wtile[2][LINEAR_TILE];      // tile-register ping-pong
#pragma HLS ARRAY_PARTITION variable = wtile complete dim = 0
  act_vec xtile;
  const int width = out_dim - ot < T ? out_dim - ot : T;

InitAcc:
  for (int r = 0; r < rows; ++r) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = CONFIG_T::max_rows
#pragma HLS PIPELINE II = 1
  InitLanes:
    for (int o = 0; o < T; ++o) {
      acc[r][o] = (bias != nullptr && o < width) ? shl(bias[ot + o], FMT_ACT_F + w_frac - bias_frac) : 0;
    }
  }
FetchFirstTile:
  for (int o = 0; o < T; ++o) {
#pragma HLS PIPELINE II = 1
  FetchFirstRow:
    for (int i = 0; i < T; ++i) wtile[0][o][i] = (o < width && i < in_dim) ? band[(acc_t)o * in_dim + i] : 0;
  }
  int cur = 0;
InTiles:
  for (int it = 0; it < in_dim; it += T) {
    const int nt = it + T;  // next tile's first input
    const int steps = rows > T ? rows : T;
  RowsFetch:  // rows of tile `it` through the MAC array; tile `nt` into the other register half
    for (int s = 0; s < steps; ++s) {
#pragma HLS LOOP_TRIPCOUNT min = CONFIG_T::tile max = CONFIG_T::max_rows
#pragma HLS PIPELINE II = 1
      if (s < T && nt < in_dim) {
      FetchRow:
        for (int i = 0; i < T; ++i) {
          wtile[1 - cur][s][i] = (s < width && nt + i < in_dim) ? band[(acc_t)s * in_dim + nt + i] : 0;
        }
      }
      if (s < rows) {
        const act_raw_t *xr = x + (acc_t)s * in_dim + it;
      LoadRow:
        for (int i = 0; i < T; ++i) xtile[i] = (it + i < in_dim) ? xr[i] : 0;
      Mac:  // T x T multipliers of act_int_t x wgt_int_t, summed exactly at LIN_ACC_W bits
        for (int o = 0; o < T; ++o) {
          lin_acc_t sum = 0;
          for (int i = 0; i < T; ++i) sum += (act_int_t)xtile[i] * (wgt_int_t)wtile[cur][o][i];
          acc[s][o] += sum;
        }
      }
    }
    cur = 1 - cur;
  }
Narrow:  // one row's TILE accumulators per cycle
  for (int r = 0; r < rows; ++r) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = CONFIG_T::max_rows
#pragma HLS PIPELINE II = 1
  NarrowLanes:
    for (int o = 0; o < T; ++o) {
      if (o < width) y[(acc_t)r * out_dim + ot + o] = narrow_act((acc_t)acc[r][o], w_frac);
    }
  }
}

// Words of output group g's band.
template <class CONFIG_T = linear_config>
int64_t band_words(int g, int in_dim, int out_dim) {
  const int rest = out_dim - g * CONFIG_T::tile;
  return (acc_t)(rest < CONFIG_T::tile ? rest : CONFIG_T::tile) * in_dim;
}

// One ping-pong step: burst the next band into `fill` while the current band computes from
// `drain`. The two tasks share no data, so in hardware they run concurrently.
template <class CONFIG_T = linear_config>
void band_step(const beat_t *w, int64_t next_first, int64_t next_words, word_t *fill, const act_raw_t *x,
               int rows, int in_dim, int out_dim, int ot, const word_t *drain, int w_frac, const word_t *bias,
               int bias_frac, act_raw_t *y) {
#pragma HLS DATAFLOW
  burst_read(w, next_first, next_words, fill);
  linear_group<CONFIG_T>(x, rows, in_dim, out_dim, ot, drain, w_frac, bias, bias_frac, y);
}

// x: rows x in_dim (row-major act); weights: out_dim x in_dim (row-major, PyTorch orientation)
// from word w_first of the beat-addressed DRAM buffer w; bias: out_dim words in a format with
// bias_frac fraction bits, or nullptr; y: rows x out_dim.
template <class CONFIG_T = linear_config>
void linear_stream(const act_raw_t *x, int rows, int in_dim, int out_dim, const beat_t *w, int64_t w_first,
                   int w_frac, const word_t *bias, int bias_frac, act_raw_t *y) {
#pragma HLS INLINE off
  const int T = CONFIG_T::tile;
  static word_t band_a[LINEAR_TILE * LINEAR_MAX_IN];
  static word_t band_b[LINEAR_TILE * LINEAR_MAX_IN];
#pragma HLS ARRAY_PARTITION variable = band_a cyclic factor = LINEAR_TILE
#pragma HLS ARRAY_PARTITION variable = band_b cyclic factor = LINEAR_TILE
  // One linear unit: both ping-pong branches below time-share the same linear_group.
#pragma HLS ALLOCATION function instances = linear_group limit = 1
#ifndef __SYNTHESIS__
  assert(in_dim <= CONFIG_T::max_in && "linear_stream: input wider than the band buffer");
#endif
  const int groups = (out_dim + T - 1) / T;
  const int64_t band_stride = (acc_t)T * in_dim;
  burst_read(w, w_first, band_words<CONFIG_T>(0, in_dim, out_dim), band_a);
Groups:
  for (int g = 0; g < groups; ++g) {
    const int64_t next_words = g + 1 < groups ? band_words<CONFIG_T>(g + 1, in_dim, out_dim) : 0;
    const int64_t next_first = w_first + (g + 1) * band_stride;
    if (g % 2 == 0) {
      band_step<CONFIG_T>(w, next_first, next_words, band_b, x, rows, in_dim, out_dim, g * T, band_a, w_frac,
                          bias, bias_frac, y);
    } else {
      band_step<CONFIG_T>(w, next_first, next_words, band_a, x, rows, in_dim, out_dim, g * T, band_b, w_frac,
                          bias, bias_frac, y);
    }
  }
}

}  // namespace edgemoe

#endif  // EDGEMOE_LINEAR_H_
