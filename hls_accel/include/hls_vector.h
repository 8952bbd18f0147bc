// SPDX-License-Identifier: Apache-2.0
// Minimal clean-room hls::vector<T, N>: a fixed-size array value type (one wide register in
// hardware) with element access and element-wise add, which is all the kernels need.
#ifndef EDGEMOE_HLS_VECTOR_H_
#define EDGEMOE_HLS_VECTOR_H_

#include <cstddef>

#define EDGEMOE_OWN_HLS_VECTOR 1

namespace hls {

template <typename T, std::size_t N>
struct vector {
  T data[N];

  static constexpr std::size_t size() { return N; }
  T &operator[](std::size_t i) { return data[i]; }
  const T &operator[](std::size_t i) const { return data[i]; }

  void fill(const T &v) {
  Fill:
    for (std::size_t i = 0; i < N; ++i) {
#pragma HLS UNROLL
      data[i] = v;
    }
  }
  vector &operator+=(const vector &o) {
  Add:
    for (std::size_t i = 0; i < N; ++i) {
#pragma HLS UNROLL
      data[i] += o.data[i];
    }
    return *this;
  }
};

}  // namespace hls

#endif  // EDGEMOE_HLS_VECTOR_H_
