// The C-simulation shared library ABI (docs/ARCHITECTURE.md): what backends/csim.py and the
// simulated PYNQ device call. Not thread-safe: the kernel's on-chip buffers are static, as they
// are one set of BRAMs in hardware; callers serialise.
#include <stdint.h>

#include "edgemoe_core.h"

extern "C" {

int edgemoe_csim_abi_version(void) { return edgemoe::ABI_VERSION; }

// Hash of the model sizes and interface version the library was compiled for
// (edgemoe_ros.accel.interface.model_signature): the host refuses a library built for another model.
int32_t edgemoe_csim_model_signature(void) { return edgemoe::MODEL_SIGNATURE; }

int edgemoe_csim_run(const uint8_t *images, const int16_t *weights_one_time, const int16_t *weights_experts,
                     int32_t *features_out, int32_t *routing_out, int32_t num_images, int32_t task_id,
                     int32_t reload_one_time_weights) {
  return edgemoe::edgemoe_core(images, weights_one_time, weights_experts, features_out, routing_out,
                               num_images, task_id, reload_one_time_weights);
}

}  // extern "C"
