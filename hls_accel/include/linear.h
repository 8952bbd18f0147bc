// The one shared linear unit (Edge-MoE's key resource saving): y = x W^T + b for every linear
// layer of the model (patch embedding, qkv, proj, dense MLP, router, experts), processed in
// TILE x TILE weight tiles. Each weight tile is fetched once per layer and applied to every row
// (token) held on chip, so weights stream from DRAM exactly once per layer; the TILE x TILE
// multiplies of a row are one fully unrolled array of DSPs.
//
// Arithmetic: act (FMT_ACT_F frac) x weight (w_frac) products summed exactly in a 64-bit
// accumulator, bias aligned to act_frac + w_frac, one narrowing to act at the end.
// Twin: fixedpoint/ops.py linear (matmul_exact + narrow).
#ifndef EDGEMOE_LINEAR_H_
#define EDGEMOE_LINEAR_H_

#ifndef __HLS_SYN__
#include <cassert>
#endif

#include "datatypes.h"
#include "hls_vector.h"

namespace edgemoe {

struct linear_config {
  static const int tile = 16;               // 16 x 16 weight tiles
  static const int max_rows = NUM_TOKENS;   // rows held on chip (tokens of one image)
};

// x: rows x in_dim (row-major act); w: out_dim x in_dim (row-major, PyTorch orientation);
// bias: out_dim words in a format with bias_frac fraction bits, or nullptr; y: rows x out_dim.
template <class CONFIG_T = linear_config>
void linear_unit(const act_raw_t *x, int rows, int in_dim, int out_dim, const word_t *w, int w_frac,
                 const word_t *bias, int bias_frac, act_raw_t *y) {
  const int T = CONFIG_T::tile;
  typedef hls::vector<acc_t, CONFIG_T::tile> acc_vec;    // one row's TILE output accumulators
  typedef hls::vector<word_t, CONFIG_T::tile> word_vec;  // one weight-tile row
#ifndef __HLS_SYN__
  assert(rows >= 0 && rows <= CONFIG_T::max_rows && "linear_unit: more rows than the on-chip buffer");
#endif
  static acc_vec acc[CONFIG_T::max_rows];
  word_vec wtile[CONFIG_T::tile];
#pragma HLS ARRAY_PARTITION variable = wtile complete dim = 0
  hls::vector<act_raw_t, CONFIG_T::tile> xtile;

OutTiles:
  for (int ot = 0; ot < out_dim; ot += T) {
  InitAcc:
    for (int r = 0; r < rows; ++r) {
      for (int o = 0; o < T; ++o) {
#pragma HLS UNROLL
        acc[r][o] = (bias != nullptr && ot + o < out_dim)
                        ? shl(bias[ot + o], FMT_ACT_F + w_frac - bias_frac)
                        : 0;
      }
    }
  InTiles:
    for (int it = 0; it < in_dim; it += T) {
    LoadTile:  // one burst per weight row segment; zero padding for partial edge tiles
      for (int o = 0; o < T; ++o) {
        for (int i = 0; i < T; ++i) {
#pragma HLS PIPELINE II = 1
          wtile[o][i] = (ot + o < out_dim && it + i < in_dim) ? w[(acc_t)(ot + o) * in_dim + it + i] : 0;
        }
      }
    Rows:
      for (int r = 0; r < rows; ++r) {
#pragma HLS LOOP_TRIPCOUNT min = 1 max = CONFIG_T::max_rows
#pragma HLS PIPELINE II = 1
        const act_raw_t *xr = x + (acc_t)r * in_dim + it;
      LoadRow:
        for (int i = 0; i < T; ++i) {
          xtile[i] = (it + i < in_dim) ? xr[i] : 0;
        }
      Mac:
        for (int o = 0; o < T; ++o) {
          acc_t s = 0;
          for (int i = 0; i < T; ++i) {
            s += (acc_t)xtile[i] * (acc_t)wtile[o][i];
          }
          acc[r][o] += s;
        }
      }
    }
  Narrow:
    for (int r = 0; r < rows; ++r) {
      for (int o = 0; o < T && ot + o < out_dim; ++o) {
#pragma HLS PIPELINE II = 1
        y[(acc_t)r * out_dim + ot + o] = narrow_act(acc[r][o], w_frac);
      }
    }
  }
}

}  // namespace edgemoe

#endif  // EDGEMOE_LINEAR_H_
