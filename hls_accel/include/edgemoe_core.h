// SPDX-License-Identifier: Apache-2.0
// The accelerator's computation without the interface pragmas, shared by the synthesis top
// (src/edgemoe_top.cpp) and the C-simulation ABI (src/csim_api.cpp), which needs the status code
// the hardware cannot return.
#ifndef EDGEMOE_CORE_H_
#define EDGEMOE_CORE_H_

#include <stdint.h>

#include "burst.h"
#include "datatypes.h"

namespace edgemoe {

// Runs the backbone on num_images images for one task. Returns CSIM_OK or a CSIM_ERR_* code
// (arguments are checked before anything is read or written). The weight buffers are read as AXI
// beats (burst.h): WORDS_PER_BEAT consecutive int16 words of accel/interface.py's layout.
int edgemoe_core(const uint8_t *images, const beat_t *weights_one_time, const beat_t *weights_experts,
                 int32_t *features_out, int32_t *routing_out, int32_t num_images, int32_t task_id,
                 int32_t reload_one_time_weights);

}  // namespace edgemoe

#endif  // EDGEMOE_CORE_H_
