// SPDX-License-Identifier: Apache-2.0
// Wide AXI reads of the weight buffers. The weight masters (gmem1: one-time weights, gmem2: expert
// weights) are AXI_DATA_WIDTH_BITS wide, the width of the ZCU102's HP ports, so every load loop
// moves one whole beat (WORDS_PER_BEAT 16-bit words) per cycle instead of one word. The host
// buffers stay plain int16 arrays in the order accel/interface.py packs them: a beat is simply
// WORDS_PER_BEAT consecutive words, and each buffer is padded to whole, aligned bursts.
#ifndef EDGEMOE_BURST_H_
#define EDGEMOE_BURST_H_

#include <cassert>

#include "datatypes.h"
#include "hls_vector.h"

namespace edgemoe {

// One AXI beat of a weight buffer (hls::vector maps to a port of its full width under Vitis).
typedef hls::vector<word_t, WORDS_PER_BEAT> beat_t;

static_assert(sizeof(beat_t) * 8 == AXI_DATA_WIDTH_BITS, "a beat is one AXI data word");
static_assert(BURST_ALIGN_WORDS % WORDS_PER_BEAT == 0, "bursts start on a beat");
static_assert(ONE_TIME_WORDS % BURST_ALIGN_WORDS == 0 && EXPERTS_BUFFER_WORDS % BURST_ALIGN_WORDS == 0,
              "weight buffers end on a burst boundary, so the last beat read is inside the buffer");

struct burst_config {
  static const int words_per_beat = WORDS_PER_BEAT;
  static const int max_beats = 1 << 20;  // trip-count bound for reports (an expert block: ~2^15)
};

// dst[0..n) = words [first, first + n) of a beat-addressed buffer, one beat per cycle.
// `first` need not be beat-aligned (one task's router starts wherever the previous task's ends):
// the words of the first and last beat outside the range are dropped, so the loop takes
// ceil((first % W + n) / W) cycles. n == 0 reads nothing (the idle half of a ping-pong step).
template <class CONFIG_T = burst_config>
void burst_read(const beat_t *src, int64_t first, int64_t n, word_t *dst) {
  const int W = CONFIG_T::words_per_beat;
#ifndef __SYNTHESIS__
  assert(first >= 0 && n >= 0 && "burst_read: negative word range");
#endif
  const int64_t beat0 = first / W;
  const int skip = (int)(first - beat0 * W);
  const int64_t beats = n > 0 ? (skip + n + W - 1) / W : 0;
BurstBeats:
  for (int64_t b = 0; b < beats; ++b) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT min = 0 max = CONFIG_T::max_beats
    const beat_t v = src[beat0 + b];
  Unpack:
    for (int j = 0; j < W; ++j) {
#pragma HLS UNROLL
      const int64_t i = b * W + j - skip;
      if (i >= 0 && i < n) dst[i] = v[j];
    }
  }
}

}  // namespace edgemoe

#endif  // EDGEMOE_BURST_H_
