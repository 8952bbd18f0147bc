// SPDX-License-Identifier: Apache-2.0
// The C-simulation shared library ABI (docs/ARCHITECTURE.md): what backends/csim.py and the
// simulated PYNQ device call. Not thread-safe: the kernel's on-chip buffers are static, as they
// are one set of BRAMs in hardware; callers serialise.
#include <stdint.h>

#include "burst.h"
#include "edgemoe_core.h"

static_assert(alignof(edgemoe::beat_t) == alignof(int16_t) && sizeof(edgemoe::beat_t) ==
                  sizeof(int16_t) * edgemoe::WORDS_PER_BEAT,
              "the C-simulation beat is a plain run of int16 words");

extern "C" {

int edgemoe_csim_abi_version(void) { return edgemoe::ABI_VERSION; }

// Hash of the model sizes and interface version the library was compiled for
// (edgemoe_ros.accel.interface.model_signature): the host refuses a library built for another model.
int32_t edgemoe_csim_model_signature(void) { return edgemoe::MODEL_SIGNATURE; }

int edgemoe_csim_run(const uint8_t *images, const int16_t *weights_one_time, const int16_t *weights_experts,
                     int32_t *features_out, int32_t *routing_out, int32_t num_images, int32_t task_id,
                     int32_t reload_one_time_weights) {
  // The host's int16 buffers viewed as AXI beats (WORDS_PER_BEAT consecutive words each, as the
  // hardware's wide masters see them). beat_t is an implicit-lifetime aggregate of int16_t with
  // int16_t's alignment, and every buffer is a whole number of beats (burst.h static_asserts).
  return edgemoe::edgemoe_core(images, reinterpret_cast<const edgemoe::beat_t *>(weights_one_time),
                               reinterpret_cast<const edgemoe::beat_t *>(weights_experts), features_out,
                               routing_out, num_images, task_id, reload_one_time_weights);
}

}  // extern "C"
