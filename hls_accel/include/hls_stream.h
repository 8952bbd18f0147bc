// SPDX-License-Identifier: Apache-2.0
// Minimal clean-room hls::stream for C-simulation: a FIFO with the blocking read/write interface
// the kernels use. Under Vitis (csim, synthesis, cosim) the tool's own hls_stream.h is used
// instead: vitis/run_hls.tcl leaves this file out of the staged sources. Reading an empty stream is a kernel bug (a deadlock in hardware), so
// in simulation it aborts with a message instead of returning garbage.
#ifndef EDGEMOE_HLS_STREAM_H_
#define EDGEMOE_HLS_STREAM_H_

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <deque>

#define EDGEMOE_OWN_HLS_STREAM 1

namespace hls {

template <typename T>
class stream {
 public:
  stream() : name_("stream") {}
  explicit stream(const char *name) : name_(name) {}
  stream(const stream &) = delete;
  stream &operator=(const stream &) = delete;

  void write(const T &v) { fifo_.push_back(v); }
  T read() {
    if (fifo_.empty()) {
      std::fprintf(stderr, "hls::stream '%s': read from an empty stream (hardware would deadlock)\n", name_);
      std::abort();
    }
    T v = fifo_.front();
    fifo_.pop_front();
    return v;
  }
  bool read_nb(T &v) {
    if (fifo_.empty()) return false;
    v = read();
    return true;
  }
  bool empty() const { return fifo_.empty(); }
  bool full() const { return false; }
  std::size_t size() const { return fifo_.size(); }
  void operator<<(const T &v) { write(v); }
  void operator>>(T &v) { v = read(); }

 private:
  const char *name_;
  std::deque<T> fifo_;
};

}  // namespace hls

#endif  // EDGEMOE_HLS_STREAM_H_
