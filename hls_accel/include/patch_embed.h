// SPDX-License-Identifier: Apache-2.0
// Patch embedding: pixels (ap_ufixed<8,0>) normalised per channel ((p - mean) * inv_std, both
// from the on-chip parameter cache), gathered per 16x16 patch in (c, ky, kx) order, projected by
// the shared linear unit with patch-embedding weights (ap_fixed<16,0>), then the class token is
// prepended and the position embedding added. Twin: fixedpoint/ops.py patch_embed.
#ifndef EDGEMOE_PATCH_EMBED_H_
#define EDGEMOE_PATCH_EMBED_H_

#include "datatypes.h"
#include "linear.h"

namespace edgemoe {

struct patch_embed_config {
  static const int img_h = IMG_H, img_w = IMG_W, patch = PATCH, chans = IN_CHANS;
  static const int grid_w = GRID_W, n_patches = NUM_PATCHES, patch_in = PATCH_IN, dim = DIM;
  static const int lanes = ELEM_LANES;  // elements per cycle of the class-token and position adds
};

static inline act_raw_t normalize_pixel(uint8_t p, word_t mean, word_t inv_std) {
  const acc_t centred = shl(p, FMT_ACT_F - FMT_PIXEL_F) - shl(mean, FMT_ACT_F - FMT_BIAS_F);
  return narrow_act(centred * (acc_t)inv_std, FMT_BIAS_F);
}

// image: img_h x img_w x chans (RGB, row-major); params: the on-chip parameter cache;
// weights: the one-time buffer (patch weights streamed from it); x: NUM_TOKENS x dim;
// patches: n_patches x patch_in scratch (the caller's wide activation buffer, idle at this point).
template <class CONFIG_T = patch_embed_config>
void patch_embed(const uint8_t *image, const word_t *params, const beat_t *weights, act_raw_t *x,
                 act_raw_t *patches) {
#pragma HLS INLINE
  const int L = CONFIG_T::lanes;
  const word_t *mean = params + OFF_PIXEL_MEAN;
  const word_t *inv_std = params + OFF_PIXEL_INV_STD;
Gather:  // per patch and pixel row: its patch*chans bytes are contiguous in the image, so the
         // innermost loop reads consecutive addresses (one burst per patch row on gmem0)
  for (int p = 0; p < CONFIG_T::n_patches; ++p) {
    const int gy = p / CONFIG_T::grid_w, gx = p % CONFIG_T::grid_w;
    for (int ky = 0; ky < CONFIG_T::patch; ++ky) {
      const int py = gy * CONFIG_T::patch + ky;
      const uint8_t *row = image + ((acc_t)py * CONFIG_T::img_w + (acc_t)gx * CONFIG_T::patch) * CONFIG_T::chans;
    GatherRow:
      for (int i = 0; i < CONFIG_T::patch * CONFIG_T::chans; ++i) {
#pragma HLS PIPELINE II = 1
        const int kx = i / CONFIG_T::chans, c = i % CONFIG_T::chans;
        patches[(acc_t)p * CONFIG_T::patch_in + (c * CONFIG_T::patch + ky) * CONFIG_T::patch + kx] =
            normalize_pixel(row[i], mean[c], inv_std[c]);
      }
    }
  }
  // Patch tokens go to rows 1..n_patches; row 0 is the class token.
  linear_stream(patches, CONFIG_T::n_patches, CONFIG_T::patch_in, CONFIG_T::dim, weights, OFF_PATCH_W,
                FMT_PATCH_WEIGHT_F, params + OFF_PATCH_B, FMT_BIAS_F, x + CONFIG_T::dim);
  const word_t *cls = params + OFF_CLS;
  const word_t *pos = params + OFF_POS;
ClsToken:
  for (int d = 0; d < CONFIG_T::dim; d += L) {
#pragma HLS PIPELINE II = 1
  ClsLanes:
    for (int j = 0; j < L; ++j) {
      if (d + j < CONFIG_T::dim) x[d + j] = (act_raw_t)shl(cls[d + j], FMT_ACT_F - FMT_BIAS_F);
    }
  }
  const int n_pos = (CONFIG_T::n_patches + 1) * CONFIG_T::dim;
PosEmbed:
  for (int i = 0; i < n_pos; i += L) {
#pragma HLS PIPELINE II = 1
  PosLanes:
    for (int j = 0; j < L; ++j) {
      if (i + j < n_pos) x[i + j] = add_sat(x[i + j], (act_raw_t)shl(pos[i + j], FMT_ACT_F - FMT_BIAS_F));
    }
  }
}

}  // namespace edgemoe

#endif  // EDGEMOE_PATCH_EMBED_H_
