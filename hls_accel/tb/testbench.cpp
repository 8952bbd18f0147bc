// SPDX-License-Identifier: Apache-2.0
// Standalone C-simulation testbench: loads a case directory written by
// edgemoe_ros.fixedpoint.testbench_io (inputs, packed weights, expected outputs from the numpy
// emulator), runs edgemoe_top's core, and COMPARES every output word.
//   usage: testbench CASE_DIR
//   exit 0: all features and routing equal; 1: mismatch; 2: bad case files; 3: kernel error.
#include <stdint.h>
#include <stdio.h>

#include <string>
#include <vector>

#include "burst.h"
#include "datatypes.h"
#include "edgemoe_core.h"

// The synthesis top (src/edgemoe_top.cpp).
void edgemoe_top(const uint8_t *images, const edgemoe::beat_t *weights_one_time,
                 const edgemoe::beat_t *weights_experts, int32_t *features_out, int32_t *routing_out,
                 int32_t num_images, int32_t task_id, int32_t reload_one_time_weights);

using namespace edgemoe;

namespace {

template <typename T>
bool load(const std::string &path, std::vector<T> &out, size_t expect_count) {
  FILE *f = fopen(path.c_str(), "rb");
  if (!f) {
    fprintf(stderr, "testbench: cannot open %s\n", path.c_str());
    return false;
  }
  fseek(f, 0, SEEK_END);
  const long bytes = ftell(f);
  fseek(f, 0, SEEK_SET);
  if (bytes < 0 || (size_t)bytes != expect_count * sizeof(T)) {
    fprintf(stderr, "testbench: %s has %ld bytes, expected %zu (%zu x %zu-byte values)\n", path.c_str(), bytes,
            expect_count * sizeof(T), expect_count, sizeof(T));
    fclose(f);
    return false;
  }
  out.resize(expect_count);
  const size_t got = fread(out.data(), sizeof(T), expect_count, f);
  fclose(f);
  if (got != expect_count) {
    fprintf(stderr, "testbench: short read on %s\n", path.c_str());
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s CASE_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  int num_images = 0, task_id = 0, signature = 0;
  {
    FILE *f = fopen((dir + "/case.txt").c_str(), "r");
    if (!f || fscanf(f, "%d %d %d", &num_images, &task_id, &signature) != 3) {
      fprintf(stderr, "testbench: %s/case.txt must hold 'num_images task_id model_signature'\n", dir.c_str());
      if (f) fclose(f);
      return 2;
    }
    fclose(f);
  }
  if (signature != MODEL_SIGNATURE) {
    fprintf(stderr, "testbench: case is for model signature %d, this build is %d\n", signature,
            MODEL_SIGNATURE);
    return 2;
  }
  if (num_images < 1 || num_images > MAX_IMAGES) {
    fprintf(stderr, "testbench: num_images %d outside 1..%d\n", num_images, MAX_IMAGES);
    return 2;
  }
  const size_t n_img = (size_t)num_images * IMG_H * IMG_W * IN_CHANS;
  const size_t n_feat = (size_t)num_images * NUM_PATCHES * DIM;
  const size_t n_rout = (size_t)num_images * NUM_MOE_LAYERS * NUM_TOKENS * TOP_K;
  std::vector<uint8_t> images;
  std::vector<beat_t> one_time, experts;  // the int16 weight files read as whole AXI beats
  std::vector<int32_t> want_feat, want_rout;
  if (!load(dir + "/images.bin", images, n_img) ||
      !load(dir + "/weights_one_time.bin", one_time, ONE_TIME_WORDS / WORDS_PER_BEAT) ||
      !load(dir + "/weights_experts.bin", experts, EXPERTS_BUFFER_WORDS / WORDS_PER_BEAT) ||
      !load(dir + "/expected_features.bin", want_feat, n_feat) ||
      !load(dir + "/expected_routing.bin", want_rout, n_rout))
    return 2;

  // The image, feature and routing buffers are as large as the top's m_axi depth= (MAX_IMAGES
  // images), because co-simulation copies that many elements through each port.
  images.resize(EDGEMOE_DEPTH_IMAGES, 0);
  std::vector<int32_t> feat(EDGEMOE_DEPTH_FEATURES_OUT, 0), rout(EDGEMOE_DEPTH_ROUTING_OUT, -1);
  static_assert((size_t)EDGEMOE_DEPTH_WEIGHTS_ONE_TIME * WORDS_PER_BEAT == (size_t)ONE_TIME_WORDS &&
                    (size_t)EDGEMOE_DEPTH_WEIGHTS_EXPERTS * WORDS_PER_BEAT == (size_t)EXPERTS_BUFFER_WORDS,
                "the weight ports' depth is the whole weight buffer");
  // Call the synthesis top itself (not the core) so Vitis co-simulation runs this same testbench;
  // a kernel-side argument error leaves the outputs untouched and shows up as mismatches below.
  edgemoe_top(images.data(), one_time.data(), experts.data(), feat.data(), rout.data(), num_images, task_id, 1);
  size_t bad_feat = 0, bad_rout = 0;
  for (size_t i = 0; i < n_feat; ++i) {
    if (feat[i] != want_feat[i]) {
      if (bad_feat < 5)
        printf("features[%zu]: got %d (%.9f) expected %d (%.9f)\n", i, feat[i], act_to_double(feat[i]),
               want_feat[i], act_to_double(want_feat[i]));
      ++bad_feat;
    }
  }
  for (size_t i = 0; i < n_rout; ++i) {
    if (rout[i] != want_rout[i]) {
      if (bad_rout < 5) printf("routing[%zu]: got %d expected %d\n", i, rout[i], want_rout[i]);
      ++bad_rout;
    }
  }
  printf("testbench: datapath %s\n", EXACT_WIDTH_DATAPATH ? "exact-width ap types" : "native int64");
  printf("testbench: %d image(s), task %d: %zu/%zu feature words differ, %zu/%zu routing entries differ\n",
         num_images, task_id, bad_feat, n_feat, bad_rout, n_rout);
  if (bad_feat || bad_rout) {
    printf("FAIL\n");
    return 1;
  }
  printf("PASS\n");
  return 0;
}
