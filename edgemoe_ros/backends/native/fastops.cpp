// SPDX-License-Identifier: Apache-2.0
// Fused float32 kernels for the CPU backend (edgemoe_ros/backends/cpu.py) and the guided and
// pyramid task heads (edgemoe_ros/model/heads.py, pyramid_head.py), loaded by fastops.py.
//
// numpy runs each element-wise step as separate full passes over memory (GELU alone is ~20);
// these kernels do one pass per step, and the GEMM below applies bias and GELU while the output
// tile is still in registers. The GEMM exists because its weights are packed once at load: at our
// shapes OpenBLAS repacks the weight matrix on every call, which dominates for the experts' ~8-40
// token blocks (measured 1.5-1.8x slower there, 1.1-1.3x at 129 tokens). Attention runs both of
// its per-head products on the same micro-kernel (k^T and v packed per head on the fly).
//
// Threads: the GEMM (split by column panels), the MoE experts (by expert), attention (by token set
// and head), the guided refinement and the pyramid head's kernels (by image row) run on an optional
// worker pool (fastops_pool_create; the cpu backend's `threads` option, and the engine's pool for
// the heads); NULL or one thread means the calling thread does everything. A split never changes
// how any output element is computed, so results are bit-identical for every thread count. There is
// no global state: every function is reentrant, and a pool that is busy with another caller's
// kernel runs the newcomer on its own thread instead of waiting. Conventions: float32, C-contiguous
// row-major buffers, sizes as int64_t, no allocation except fastops_moe_group's scratch, the per-
// thread scratch of attention and the head kernels (kept between calls) and upsample_fuse's
// stretched rows. Built without -ffast-math: loops are written to auto-vectorise as they are, and
// only the reductions marked `#pragma omp simd reduction` (honoured with -fopenmp-simd, which adds
// no runtime and no threads) are reassociated. The loader checks fastops_abi_version() and
// fastops_panel_width() before any other call.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

// Bump whenever a signature or a buffer convention below changes (fastops.py: ABI_VERSION).
static const int32_t FASTOPS_ABI_VERSION = 6;

// Return codes of the kernels that can fail (fastops.py: ERRORS).
static const int32_t FASTOPS_OK = 0;
static const int32_t FASTOPS_BAD_INDEX = -1;
static const int32_t FASTOPS_NO_MEMORY = -2;
static const int32_t FASTOPS_BAD_ARGUMENT = -3;

namespace {

// ---- worker pool -------------------------------------------------------------------------------
// for_each(n, fn) calls fn(i) once for every i in [0, n): the caller and the workers take items
// from one atomic counter (dynamic scheduling: experts differ in size). The caller never waits for
// a worker to wake up: once every item is taken it closes the round, waits only for workers still
// running an item, and a worker that wakes after that sits the round out. Between rounds a worker
// spins for SPIN_US first (the kernels of one forward pass follow each other within tens of
// microseconds, less than a condition-variable wake-up takes here), then sleeps on a condition
// variable, so a pool between frames costs no CPU (the node's DDS threads need the cores).
const std::chrono::microseconds SPIN_US(100);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

class Pool {
  public:
    explicit Pool(int threads) {
        for (int t = 1; t < threads; ++t) workers_.emplace_back([this] { work(); });
    }
    ~Pool() {
        {
            std::lock_guard<std::mutex> lock(m_);
            stop_ = true;
        }
        wake_.notify_all();
        for (auto &w : workers_) w.join();
    }
    int threads() const { return static_cast<int>(workers_.size()) + 1; }

    void for_each(int64_t n, const std::function<void(int64_t)> &fn) {
        std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
        if (workers_.empty() || n < 2 || !busy.owns_lock()) {  // serial; busy: another caller's kernel
            for (int64_t i = 0; i < n; ++i) fn(i);
            return;
        }
        {
            std::lock_guard<std::mutex> lock(m_);
            fn_ = &fn;
            n_ = n;
            next_.store(0);
            open_ = true;
            round_.fetch_add(1);
        }
        wake_.notify_all();
        drain();
        std::unique_lock<std::mutex> lock(m_);
        open_ = false;
        idle_.wait(lock, [this] { return active_ == 0; });
        fn_ = nullptr;
    }

  private:
    void drain() {
        for (int64_t i = next_.fetch_add(1); i < n_; i = next_.fetch_add(1)) (*fn_)(i);
    }
    void work() {
        uint64_t seen = 0;
        for (;;) {
            const auto until = std::chrono::steady_clock::now() + SPIN_US;
            while (round_.load() == seen && !stop_ && std::chrono::steady_clock::now() < until) cpu_relax();
            {
                std::unique_lock<std::mutex> lock(m_);
                wake_.wait(lock, [&] { return stop_ || round_.load() != seen; });
                if (stop_) return;
                seen = round_.load();
                if (!open_) continue;  // woke after the caller finished this round alone
                ++active_;
            }
            drain();
            std::lock_guard<std::mutex> lock(m_);
            if (--active_ == 0) idle_.notify_one();
        }
    }

    std::vector<std::thread> workers_;
    std::mutex m_, busy_;
    std::condition_variable wake_, idle_;
    const std::function<void(int64_t)> *fn_ = nullptr;  // valid while open_ or active_ > 0
    int64_t n_ = 0;
    std::atomic<int64_t> next_{0};
    int active_ = 0;
    std::atomic<uint64_t> round_{0};
    bool open_ = false;
    std::atomic<bool> stop_{false};
};

// fn(i) for every i in [0, n): on the pool if there is one, else on the calling thread.
void run_items(void *pool, int64_t n, const std::function<void(int64_t)> &fn) {
    if (pool == nullptr) {
        for (int64_t i = 0; i < n; ++i) fn(i);
    } else {
        static_cast<Pool *>(pool)->for_each(n, fn);
    }
}

// Work items smaller than this many multiply-adds are not worth waking a worker for (a wake-up
// costs a few microseconds; 64k multiply-adds take ~1 us here).
const int64_t MIN_PARALLEL_MACS = 1 << 16;

// ---- exp for float32, branch-free so loops around it vectorise -------------------------------
// Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2, then Cephes' degree-6 polynomial for
// exp(r) (relative error ~1 ulp), then 2^n built in the exponent bits. Inputs are clamped to
// [EXP_MIN_ARG, EXP_MAX_ARG] so 2^n stays a normal float: exp(-87) ~ 1.6e-38, i.e. zero for every
// use here (softmax terms), and no input of ours comes near exp(88).
const float EXP_MIN_ARG = -87.0f;
const float EXP_MAX_ARG = 88.0f;
const float LOG2E = 1.44269504088896341f;
const float LN2_HI = 0.693359375f;      // ln 2 split so n * LN2_HI is exact for |n| < 2^9
const float LN2_LO = -2.12194440e-4f;
const float ROUND_MAGIC = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer (round-to-nearest)

inline float exp_f32(float x) {
    x = x < EXP_MIN_ARG ? EXP_MIN_ARG : x;
    x = x > EXP_MAX_ARG ? EXP_MAX_ARG : x;
    float n = (x * LOG2E + ROUND_MAGIC) - ROUND_MAGIC;
    float r = x - n * LN2_HI;
    r = r - n * LN2_LO;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

// ---- exact (erf) GELU ------------------------------------------------------------------------
// gelu(x) = x Phi(x), Phi(x) = 1/2 + erf(z)/2 with z = x/sqrt2. erf on |z| <= ERF_SAT is a
// rational minimax fit of our own, erf(z) ~ z P(z^2) / Q(z^2) (degrees 6 and 5 in z^2; fitted in
// float64, error 1.7e-8; float32 evaluation ~3e-7 absolute): one division and 12 multiply-adds,
// 2.4x faster here than erfc via exp (A&S 7.1.26, what the numpy float32 path in
// model/layers.py::gelu uses; the two agree to ~5e-7 |x|). Beyond ERF_SAT, Phi is 0 or 1 to
// float32 precision (erf(4) = 1 - 1.5e-8): gelu is 0 below, x above; NaN stays NaN.
const float SQRT1_2 = 0.70710678118654752f;
const float ERF_SAT = 4.0f;
const float ERF_P0 = 0.564189612865448f;  // the 1/2 of Phi is folded into P
const float ERF_P1 = 0.0919623002409935f;
const float ERF_P2 = 0.026992032304406166f;
const float ERF_P3 = 0.0018877455731853843f;
const float ERF_P4 = 0.00018566746439319104f;
const float ERF_P5 = 2.2474951038020663e-06f;
const float ERF_P6 = -6.061334989482248e-09f;
const float ERF_Q1 = 0.4963325560092926f;
const float ERF_Q2 = 0.113285131752491f;
const float ERF_Q3 = 0.015286185778677464f;
const float ERF_Q4 = 0.0012812576023861766f;
const float ERF_Q5 = 6.130412657512352e-05f;

// Always inlined: called out of line, the loops over it (gelu_inplace, the GEMM epilogue) ran one
// element per call instead of vectorising (15 % of the pyramid head's time).
__attribute__((always_inline)) inline float gelu_f32(float x) {
    const float z = x * SQRT1_2;
    float zc = z < -ERF_SAT ? -ERF_SAT : z;  // comparisons with NaN are false: NaN passes through
    zc = zc > ERF_SAT ? ERF_SAT : zc;
    const float z2 = zc * zc;
    float p = ERF_P6;
    p = p * z2 + ERF_P5;
    p = p * z2 + ERF_P4;
    p = p * z2 + ERF_P3;
    p = p * z2 + ERF_P2;
    p = p * z2 + ERF_P1;
    p = p * z2 + ERF_P0;
    float q = ERF_Q5;
    q = q * z2 + ERF_Q4;
    q = q * z2 + ERF_Q3;
    q = q * z2 + ERF_Q2;
    q = q * z2 + ERF_Q1;
    q = q * z2 + 1.0f;
    const float phi = z > ERF_SAT ? 1.0f : 0.5f + zc * p / q;
    return z < -ERF_SAT ? 0.0f : x * phi;
}


// ---- GEMM with packed weights ------------------------------------------------------------------
// C (M, N) = act(A (M, K) B (K, N) + bias). B is packed once per model into column panels of
// PANEL floats: packed[p][k][j] = B[k][p * PANEL + j], zero past N, so the inner loop reads
// contiguous K x PANEL panels (12-48 KB each) per block of MICRO_ROWS rows of A. The micro-kernel
// keeps a tile of C in registers: with AVX-512, MICRO_ROWS = 8 rows by TILE_PANELS = 3 panels,
// one 16-float register each (24 of the 32 registers; 3 loads of B and 8 broadcasts of A per 24
// FMAs: measured here 100-150 GFLOP/s at our shapes, against 55-69 for 12 rows of one panel, which
// spends more on loads than on FMAs); otherwise 6 rows by one panel in two 8-float registers
// (Haswell-style 6x16: 12 of 16 registers; 8 x 2 and 12 x 2 tiles measured no better in the
// engine). Each element of C is the same sum in the same order whatever the tile, so both builds'
// GEMMs give the same bits (tested; the lane-summed reductions of LayerNorm and softmax differ at
// float32 rounding). Software prefetch of the next panels measured 3-5 % slower: the hardware
// prefetcher follows the panel streams. GCC vector extensions: AVX2+FMA or AVX-512 with
// -march=native on x86, NEON (two halves) on ARM.
typedef float vec8 __attribute__((vector_size(32), aligned(4)));  // aligned(4): unaligned loads OK
const int PANEL = 16;

enum Activation : int32_t { ACT_NONE = 0, ACT_GELU = 1 };

// One finished row of a tile, one panel wide: bias, activation, the valid columns stored. A whole
// panel (every one but a matrix's last) takes fixed-length loops: a few vector instructions.
inline void store_tile_row(float *tile, float *c, int cols, const float *bias, int32_t act) {
    if (cols == PANEL) {
        if (bias != nullptr) {
            for (int j = 0; j < PANEL; ++j) tile[j] += bias[j];
        }
        if (act == ACT_GELU) {
            for (int j = 0; j < PANEL; ++j) tile[j] = gelu_f32(tile[j]);
        }
        for (int j = 0; j < PANEL; ++j) c[j] = tile[j];
        return;
    }
    if (bias != nullptr) {
        for (int j = 0; j < cols; ++j) tile[j] += bias[j];
    }
    if (act == ACT_GELU) {
        for (int j = 0; j < PANEL; ++j) tile[j] = gelu_f32(tile[j]);
    }
    for (int j = 0; j < cols; ++j) c[j] = tile[j];
}

#if defined(__AVX512F__)
typedef float vec16 __attribute__((vector_size(64), aligned(4)));
const int MICRO_ROWS = 8;
const int TILE_PANELS = 3;

// R rows of A by P consecutive panels of B; ``cols``: valid columns of the last panel.
template <int R, int P>
inline void gemm_tile(const float *const *a, int64_t k_len, const float *panel, float *const *c, int cols,
                      const float *bias, int32_t act) {
    vec16 acc[R][P];
    for (int r = 0; r < R; ++r)
        for (int q = 0; q < P; ++q) acc[r][q] = vec16{};
    const int64_t panel_floats = k_len * PANEL;
    for (int64_t k = 0; k < k_len; ++k) {
        vec16 b[P];
        for (int q = 0; q < P; ++q) b[q] = *reinterpret_cast<const vec16 *>(panel + q * panel_floats + k * PANEL);
        for (int r = 0; r < R; ++r) {
            const float av = a[r][k];
            for (int q = 0; q < P; ++q) acc[r][q] += av * b[q];
        }
    }
    float tile[PANEL];
    for (int r = 0; r < R; ++r)
        for (int q = 0; q < P; ++q) {
            *reinterpret_cast<vec16 *>(tile) = acc[r][q];
            store_tile_row(tile, c[r] + q * PANEL, q == P - 1 ? cols : PANEL,
                           bias != nullptr ? bias + q * PANEL : nullptr, act);
        }
}
#else
const int MICRO_ROWS = 6;
const int TILE_PANELS = 1;

template <int R, int P>
inline void gemm_tile(const float *const *a, int64_t k_len, const float *panel, float *const *c, int cols,
                      const float *bias, int32_t act) {
    static_assert(P == 1, "one panel per tile without AVX-512");
    vec8 lo[R], hi[R];
    for (int r = 0; r < R; ++r) {
        lo[r] = vec8{};
        hi[r] = vec8{};
    }
    for (int64_t k = 0; k < k_len; ++k) {
        const vec8 b0 = *reinterpret_cast<const vec8 *>(panel + k * PANEL);
        const vec8 b1 = *reinterpret_cast<const vec8 *>(panel + k * PANEL + 8);
        for (int r = 0; r < R; ++r) {
            const float av = a[r][k];
            lo[r] += av * b0;
            hi[r] += av * b1;
        }
    }
    float tile[PANEL];
    for (int r = 0; r < R; ++r) {
        *reinterpret_cast<vec8 *>(tile) = lo[r];
        *reinterpret_cast<vec8 *>(tile + 8) = hi[r];
        store_tile_row(tile, c[r], cols, bias, act);
    }
}
#endif

// gemm_tile<rows, P> for a run-time row count in [1, R]: the remainder tile of a block.
template <int R, int P>
inline void gemm_tile_rows(int rows, const float *const *a, int64_t k_len, const float *panel, float *const *c,
                           int cols, const float *bias, int32_t act) {
    if constexpr (R > 1) {
        if (rows < R) return gemm_tile_rows<R - 1, P>(rows, a, k_len, panel, c, cols, bias, act);
    }
    gemm_tile<R, P>(a, k_len, panel, c, cols, bias, act);
}

// gemm_tile_rows<MICRO_ROWS, panels> for a run-time panel count in [1, P].
template <int P>
inline void gemm_tile_panels(int panels, int rows, const float *const *a, int64_t k_len, const float *panel,
                             float *const *c, int cols, const float *bias, int32_t act) {
    if constexpr (P > 1) {
        if (panels < P) return gemm_tile_panels<P - 1>(panels, rows, a, k_len, panel, c, cols, bias, act);
    }
    gemm_tile_rows<MICRO_ROWS, P>(rows, a, k_len, panel, c, cols, bias, act);
}

// Rows of A are a_base + row(i) * lda with row(i) = rows ? rows[i] : i (rows: a gather, e.g. the
// tokens routed to one expert, without copying them).
// Columns panels [p_lo, p_hi) only: the unit a pool splits the GEMM into.
void gemm_panels(const float *a_base, int64_t lda, const int32_t *rows, int64_t m, int64_t k_len,
                 const float *packed, int64_t n, float *c_base, int64_t ldc, const float *bias, int32_t act,
                 int64_t p_lo, int64_t p_hi) {
    const float *a[MICRO_ROWS];
    float *c[MICRO_ROWS];
    for (int64_t p = p_lo, panels = 0; p < p_hi; p += panels) {
        // Whole tiles of TILE_PANELS, but 4 left go as 2 + 2: a one-panel tile loads A per 8 FMAs.
        panels = static_cast<int>(std::min<int64_t>(TILE_PANELS, p_hi - p));
        if (TILE_PANELS == 3 && p_hi - p == 4) panels = 2;
        const int64_t last = p + panels - 1;
        const int cols = static_cast<int>(n - last * PANEL < PANEL ? n - last * PANEL : PANEL);
        const float *panel = packed + p * k_len * PANEL;
        const float *pbias = bias != nullptr ? bias + p * PANEL : nullptr;
        for (int64_t i = 0; i < m; i += MICRO_ROWS) {
            const int tile_rows = static_cast<int>(m - i < MICRO_ROWS ? m - i : MICRO_ROWS);
            for (int r = 0; r < tile_rows; ++r) {
                a[r] = a_base + (rows != nullptr ? static_cast<int64_t>(rows[i + r]) : i + r) * lda;
                c[r] = c_base + (i + r) * ldc + p * PANEL;
            }
            gemm_tile_panels<TILE_PANELS>(panels, tile_rows, a, k_len, panel, c, cols, pbias, act);
        }
    }
}

void gemm_packed(const float *a_base, int64_t lda, const int32_t *rows, int64_t m, int64_t k_len,
                 const float *packed, int64_t n, float *c_base, int64_t ldc, const float *bias, int32_t act,
                 Pool *pool = nullptr) {
    const int64_t panels = (n + PANEL - 1) / PANEL;
    const int64_t macs = m * k_len * n;
    if (pool == nullptr || pool->threads() == 1 || macs < 2 * MIN_PARALLEL_MACS) {
        gemm_panels(a_base, lda, rows, m, k_len, packed, n, c_base, ldc, bias, act, 0, panels);
        return;
    }
    // A few chunks per thread so a late-starting worker still gets a share, none under the minimum.
    const int64_t by_size = std::max<int64_t>(1, macs / MIN_PARALLEL_MACS);
    const int64_t chunks = std::min<int64_t>({panels, 4 * static_cast<int64_t>(pool->threads()), by_size});
    pool->for_each(chunks, [&](int64_t i) {
        gemm_panels(a_base, lda, rows, m, k_len, packed, n, c_base, ldc, bias, act, panels * i / chunks,
                    panels * (i + 1) / chunks);
    });
}

int64_t packed_size(int64_t k_len, int64_t n) { return (n + PANEL - 1) / PANEL * k_len * PANEL; }

// Pack B (K, N) given as B[k][j] = b[k * row_stride + j * col_stride] into gemm_packed's panels
// (zero past N): lets the attention kernel feed strided views of qkv to the GEMM micro-kernel.
void pack_strided(const float *b, int64_t row_stride, int64_t col_stride, int64_t k_len, int64_t n, float *out) {
    const int64_t panels = (n + PANEL - 1) / PANEL;
    for (int64_t p = 0; p < panels; ++p) {
        for (int64_t k = 0; k < k_len; ++k) {
            float *dst = out + (p * k_len + k) * PANEL;
            for (int j = 0; j < PANEL; ++j) {
                const int64_t col = p * PANEL + j;
                dst[j] = col < n ? b[k * row_stride + col * col_stride] : 0.0f;
            }
        }
    }
}

// The head kernels (guided refinement, pyramid) sum REFINE_VECS independent vectors of LANES
// floats (REFINE_BLOCK pixels) per weight, so consecutive multiply-adds do not wait on each other's
// latency: 16-float registers with AVX-512, else 8. Every pixel's sums are the same either way.
#if defined(__AVX512F__)
typedef float vecr __attribute__((vector_size(64), aligned(4)));
const int LANES = 16;
#else
typedef vec8 vecr;
const int LANES = 8;
#endif
const int REFINE_VECS = 4;
const int64_t REFINE_BLOCK = LANES * REFINE_VECS;

inline vecr loadr(const float *p) { return *reinterpret_cast<const vecr *>(p); }
inline void storer(float *p, vecr v) { *reinterpret_cast<vecr *>(p) = v; }

inline void gelu_inplace(float *x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = gelu_f32(x[i]);
}

// ---- pyramid head helpers: planar rows padded to whole REFINE_BLOCKs ---------------------------
inline int64_t block_width(int64_t w) { return (w + REFINE_BLOCK - 1) / REFINE_BLOCK * REFINE_BLOCK; }

// Grows a per-thread scratch buffer; false if memory ran out.
inline bool reserve(std::vector<float> &buf, int64_t n) {
    try {
        if (buf.size() < static_cast<size_t>(n)) buf.resize(static_cast<size_t>(n));
    } catch (const std::bad_alloc &) {
        return false;
    }
    return true;
}

// out[o][x] += sum_c w[o * cin + c] * in[c][x] for x in [0, wv): every output channel summed in
// registers over blocks of REFINE_BLOCK pixels (rows of in and out are in_stride / out_stride apart).
inline void accumulate_rows(const float *in, int64_t in_stride, int32_t cin, const float *w, int32_t cout,
                            float *out, int64_t out_stride, int64_t wv) {
    for (int32_t o = 0; o < cout; ++o) {
        const float *wo = w + static_cast<int64_t>(o) * cin;
        for (int64_t x0 = 0; x0 < wv; x0 += REFINE_BLOCK) {
            vecr acc[REFINE_VECS];
            for (int v = 0; v < REFINE_VECS; ++v) acc[v] = loadr(out + o * out_stride + x0 + LANES * v);
            for (int32_t c = 0; c < cin; ++c) {
                const float *src = in + c * in_stride + x0;
                for (int v = 0; v < REFINE_VECS; ++v) acc[v] += wo[c] * loadr(src + LANES * v);
            }
            for (int v = 0; v < REFINE_VECS; ++v) storer(out + o * out_stride + x0 + LANES * v, acc[v]);
        }
    }
}

// Copies rows [0, width) of scratch (channels x stride) into planar out (channels rows of plane apart).
inline void store_rows(const float *scratch, int64_t stride, int32_t channels, int64_t width, float *out,
                       int64_t plane) {
    for (int32_t c = 0; c < channels; ++c) std::memcpy(out + c * plane, scratch + c * stride, width * sizeof(float));
}

// PyTorch's bilinear source taps (align_corners=False) of output index i on an axis n_in -> n_out.
inline void bilinear_tap(int64_t i, int64_t n_in, int64_t n_out, int64_t *i0, int64_t *i1, float *frac) {
    double src = (static_cast<double>(i) + 0.5) * (static_cast<double>(n_in) / static_cast<double>(n_out)) - 0.5;
    src = src < 0.0 ? 0.0 : src;
    int64_t lo = static_cast<int64_t>(std::floor(src));
    lo = lo > n_in - 1 ? n_in - 1 : lo;
    *i0 = lo;
    *i1 = lo + 1 > n_in - 1 ? n_in - 1 : lo + 1;
    *frac = static_cast<float>(src - static_cast<double>(lo));
}

}  // namespace

extern "C" {

int32_t fastops_abi_version(void) { return FASTOPS_ABI_VERSION; }

int32_t fastops_panel_width(void) { return PANEL; }

// A pool of `threads` threads in all (the caller counts as one), for the kernels that take one.
void *fastops_pool_create(int32_t threads) {
    if (threads < 1) return nullptr;
    try {
        return new Pool(threads);
    } catch (...) {  // std::system_error: the OS refused a thread
        return nullptr;
    }
}

void fastops_pool_destroy(void *pool) { delete static_cast<Pool *>(pool); }

int32_t fastops_pool_threads(const void *pool) { return pool ? static_cast<const Pool *>(pool)->threads() : 1; }

// C = act(A B + bias) with B packed (see gemm_packed); A rows gathered through `rows` if not NULL,
// each checked against a_rows (the rows A has). bias (n) may be NULL; act: 0 none, 1 GELU.
int32_t fastops_gemm(const float *a, int64_t lda, int64_t a_rows, const int32_t *rows, int64_t m, int64_t k_len,
                     const float *packed, int64_t n, float *c, int64_t ldc, const float *bias, int32_t act,
                     void *pool) {
    if (rows != nullptr) {
        for (int64_t i = 0; i < m; ++i) {
            if (rows[i] < 0 || rows[i] >= a_rows) return FASTOPS_BAD_INDEX;
        }
    }
    gemm_packed(a, lda, rows, m, k_len, packed, n, c, ldc, bias, act, static_cast<Pool *>(pool));
    return FASTOPS_OK;
}

void fastops_softmax_rows(float *x, int64_t rows, int64_t cols);  // below

// Multi-head self-attention of `streams` independent token sets, from the qkv projection to the
// per-token concatenation of the heads (before the output projection):
//   qkv (streams * n, 3 * heads * head_dim): per token [q heads | k heads | v heads], q pre-scaled
//   ctx (streams * n, heads * head_dim)      ctx_h = softmax(q_h k_h^T) v_h
// One item per (stream, head), shared out over the pool; each packs k_h^T and v_h into GEMM
// panels and runs both products on the GEMM micro-kernel. 0, or FASTOPS_NO_MEMORY.
int32_t fastops_attention(const float *qkv, int64_t streams, int64_t n, int32_t heads, int64_t head_dim,
                          float *ctx, void *pool) {
    // No item would run and ctx would come back unwritten (uninitialised memory as features).
    if (streams < 1 || n < 1 || heads < 1 || head_dim < 1) return FASTOPS_BAD_ARGUMENT;
    const int64_t d = heads * head_dim, ld = 3 * d;
    const int64_t kt_size = packed_size(head_dim, n), v_size = packed_size(n, head_dim);
    std::atomic<bool> failed{false};
    auto item = [&](int64_t i) {
        const int64_t s = i / heads, h = i % heads;
        // Per thread and kept: a fresh ~140 KB buffer per item would be mmap'd and page-faulted each time.
        thread_local std::vector<float> scratch;
        try {
            if (scratch.size() < static_cast<size_t>(kt_size + v_size + n * n)) scratch.resize(kt_size + v_size + n * n);
        } catch (const std::bad_alloc &) {
            failed = true;
            return;
        }
        float *kt = scratch.data(), *v = kt + kt_size, *scores = v + v_size;
        const float *base = qkv + s * n * ld + h * head_dim;
        pack_strided(base + d, 1, ld, head_dim, n, kt);      // k_h^T (head_dim, n)
        pack_strided(base + 2 * d, ld, 1, n, head_dim, v);   // v_h (n, head_dim)
        gemm_panels(base, ld, nullptr, n, head_dim, kt, n, scores, n, nullptr, ACT_NONE, 0, (n + PANEL - 1) / PANEL);
        fastops_softmax_rows(scores, n, n);
        gemm_panels(scores, n, nullptr, n, n, v, head_dim, ctx + s * n * d + h * head_dim, d, nullptr, ACT_NONE, 0,
                    (head_dim + PANEL - 1) / PANEL);
    };
    run_items(pool, streams * heads, item);
    return failed ? FASTOPS_NO_MEMORY : FASTOPS_OK;
}

// Every expert of a MoE layer in one call (after fastops_moe_group): expert e takes the rows
// uniq_src[bounds[e] .. bounds[e+1]) of h (num_src, dim), computes
//   hidden = GELU(h_rows fc1_e + fc1_bias_e)   (rows bounds[e].. of hidden (M, expert_hidden))
//   out    = hidden fc2_e + fc2_bias_e         (rows bounds[e].. of out (M, dim))
// fc1 (num_experts, packed dim x expert_hidden), fc2 (num_experts, packed expert_hidden x dim).
int32_t fastops_moe_experts(const float *h, int64_t num_src, int64_t dim, const int32_t *uniq_src,
                            const int32_t *bounds, int32_t num_experts, int64_t expert_hidden,
                            const float *fc1, const float *fc1_bias, const float *fc2, const float *fc2_bias,
                            float *hidden, float *out, void *pool) {
    if (bounds[0] != 0) return FASTOPS_BAD_INDEX;
    for (int32_t e = 0; e < num_experts; ++e) {
        if (bounds[e + 1] < bounds[e]) return FASTOPS_BAD_INDEX;
    }
    for (int64_t i = 0; i < bounds[num_experts]; ++i) {
        if (uniq_src[i] < 0 || uniq_src[i] >= num_src) return FASTOPS_BAD_INDEX;
    }
    const int64_t fc1_size = packed_size(dim, expert_hidden), fc2_size = packed_size(expert_hidden, dim);
    auto expert = [&](int32_t e) {
        const int64_t lo = bounds[e], m = bounds[e + 1] - bounds[e];
        if (m == 0) return;
        gemm_packed(h, dim, uniq_src + lo, m, dim, fc1 + e * fc1_size, expert_hidden, hidden + lo * expert_hidden,
                    expert_hidden, fc1_bias + e * expert_hidden, ACT_GELU);
        gemm_packed(hidden + lo * expert_hidden, expert_hidden, nullptr, m, expert_hidden, fc2 + e * fc2_size, dim,
                    out + lo * dim, dim, fc2_bias + e * dim, ACT_NONE);
    };
    if (pool == nullptr) {
        for (int32_t e = 0; e < num_experts; ++e) expert(e);
        return FASTOPS_OK;
    }
    // One item per expert (fc1 then fc2 on its own rows), largest first so the last ones are short.
    std::vector<int32_t> order(num_experts);
    for (int32_t e = 0; e < num_experts; ++e) order[e] = e;
    std::stable_sort(order.begin(), order.end(), [&](int32_t x, int32_t y) {
        return bounds[x + 1] - bounds[x] > bounds[y + 1] - bounds[y];
    });
    run_items(pool, num_experts, [&](int64_t i) { expert(order[i]); });
    return FASTOPS_OK;
}

// Residual add then LayerNorm standardisation, row by row (the backbone's `x += f(LN(x))` chain):
//   if delta:      x[r] += delta[r] (+ delta_bias)     (written back: x is the residual stream)
//   out[r] = (x[r] - mean) / sqrt(var + eps)           (biased variance, PyTorch semantics)
//   if gamma/beta: out[r] = out[r] * gamma + beta      (only the final LayerNorm keeps its affine)
// Mean and variance are two passes over the row (in L1), each summed in vector lanes: the same
// accuracy class as numpy's float32 pairwise sums.
void fastops_add_layernorm(float *x, const float *delta, const float *delta_bias, float *out,
                           int64_t rows, int64_t cols, float eps, const float *gamma, const float *beta) {
    const float inv_n = 1.0f / static_cast<float>(cols);
    for (int64_t r = 0; r < rows; ++r) {
        float *xr = x + r * cols;
        float *o = out + r * cols;
        if (delta != nullptr) {
            const float *d = delta + r * cols;
            if (delta_bias != nullptr) {
                for (int64_t c = 0; c < cols; ++c) xr[c] += d[c] + delta_bias[c];
            } else {
                for (int64_t c = 0; c < cols; ++c) xr[c] += d[c];
            }
        }
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t c = 0; c < cols; ++c) sum += xr[c];
        const float mean = sum * inv_n;
        float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
        for (int64_t c = 0; c < cols; ++c) {
            const float dev = xr[c] - mean;
            sq += dev * dev;
        }
        const float inv_std = 1.0f / std::sqrt(sq * inv_n + eps);
        if (gamma != nullptr && beta != nullptr) {
            for (int64_t c = 0; c < cols; ++c) o[c] = (xr[c] - mean) * inv_std * gamma[c] + beta[c];
        } else {
            for (int64_t c = 0; c < cols; ++c) o[c] = (xr[c] - mean) * inv_std;
        }
    }
}

// Numerically stable softmax of each row of a (rows, cols) matrix, in place (attention scores).
void fastops_softmax_rows(float *x, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; ++r) {
        float *xr = x + r * cols;
        float mx = xr[0];
#pragma omp simd reduction(max : mx)
        for (int64_t c = 1; c < cols; ++c) mx = xr[c] > mx ? xr[c] : mx;
        for (int64_t c = 0; c < cols; ++c) xr[c] = exp_f32(xr[c] - mx);
        double sum = 0.0;
#pragma omp simd reduction(+ : sum)
        for (int64_t c = 0; c < cols; ++c) sum += xr[c];
        const float inv = static_cast<float>(1.0 / sum);
        for (int64_t c = 0; c < cols; ++c) xr[c] *= inv;
    }
}

// Router: for each of `rows` rows of logits (num_experts values starting at logits + r * ld),
// the top_k experts best first with ties going to the lower expert id (the reference's stable
// sort), and their gates = softmax over ALL experts of the logits, not renormalised (M3ViT).
// Top-k on the logits selects the same experts as top-k on the probabilities (exp is increasing)
// without exp's float32 ties. chosen and gates are (rows, top_k), top_k >= 1. A NaN logit ranks
// below every number (as numpy's sort puts NaN last); a row of only NaNs picks experts 0..k-1.
void fastops_moe_route(const float *logits, int64_t rows, int64_t ld, int32_t num_experts, int32_t top_k,
                       int32_t *chosen, float *gates) {
    for (int64_t r = 0; r < rows; ++r) {
        const float *l = logits + r * ld;
        int32_t *ch = chosen + r * top_k;
        float *g = gates + r * top_k;
        for (int32_t j = 0; j < top_k; ++j) {
            int32_t best = -1;
            for (int32_t e = 0; e < num_experts; ++e) {
                bool taken = false;
                for (int32_t i = 0; i < j; ++i) taken = taken || ch[i] == e;
                if (taken) continue;
                if (best < 0 || l[e] > l[best] || (std::isnan(l[best]) && !std::isnan(l[e]))) best = e;
            }
            ch[j] = best;
        }
        const float mx = l[ch[0]];
        double denom = 0.0;
        for (int32_t e = 0; e < num_experts; ++e) denom += exp_f32(l[e] - mx);
        for (int32_t j = 0; j < top_k; ++j) g[j] = static_cast<float>(exp_f32(l[ch[j]] - mx) / denom);
    }
}

// Patch reordering (Edge-MoE): group the (token, slot) pairs of a MoE layer by expert.
// Pair j = (row j / top_k, slot j % top_k) sends source row src(j) = (j / top_k) % num_src to expert
// experts[j]; with T task streams stacked task-major over one shared source (the first MoE layer)
// the modulo maps every task's pair to the same row, so a (expert, row) pair two tasks share is
// evaluated once. Outputs: the M distinct pairs sorted by expert then row as uniq_src[0..M) (the
// rows to gather), bounds[e]..bounds[e+1] the slice of expert e, and inverse[j] the position of
// pair j's (expert, row) in that order. uniq_src and inverse hold num_pairs entries, bounds
// num_experts + 1. Returns M, or FASTOPS_BAD_INDEX for an expert id out of range.
int64_t fastops_moe_group(const int32_t *experts, int64_t num_pairs, int32_t top_k, int64_t num_src,
                          int32_t num_experts, int32_t *uniq_src, int32_t *bounds, int32_t *inverse) {
    for (int64_t j = 0; j < num_pairs; ++j) {
        if (experts[j] < 0 || experts[j] >= num_experts) return FASTOPS_BAD_INDEX;
    }
    try {
        // slot[e * num_src + s]: 1 while marking, then the pair's position in the sorted order.
        std::vector<int32_t> slot(static_cast<size_t>(num_experts) * static_cast<size_t>(num_src), 0);
        for (int64_t j = 0; j < num_pairs; ++j) {
            slot[static_cast<int64_t>(experts[j]) * num_src + (j / top_k) % num_src] = 1;
        }
        int32_t m = 0;
        for (int32_t e = 0; e < num_experts; ++e) {
            bounds[e] = m;
            int32_t *row = slot.data() + static_cast<int64_t>(e) * num_src;
            for (int64_t s = 0; s < num_src; ++s) {
                if (row[s]) {
                    uniq_src[m] = static_cast<int32_t>(s);
                    row[s] = m++;
                }
            }
        }
        bounds[num_experts] = m;
        for (int64_t j = 0; j < num_pairs; ++j) {
            inverse[j] = slot[static_cast<int64_t>(experts[j]) * num_src + (j / top_k) % num_src];
        }
        return m;
    } catch (const std::bad_alloc &) {
        return FASTOPS_NO_MEMORY;
    }
}

// The gated mix: out[t] = sum over slots i of gates[t, i] * expert_out[inverse[t, i]] for t < rows,
// with expert_out (M, cols) in the order of fastops_moe_group (biases included). Slots accumulate
// in slot order, like numpy's (rows, k, cols).sum(axis=1). FASTOPS_BAD_INDEX if an index is out of range.
int32_t fastops_moe_combine(const float *expert_out, int64_t num_out, const int32_t *inverse, const float *gates,
                            int64_t rows, int32_t top_k, int64_t cols, float *out) {
    const int64_t pairs = rows * top_k;
    for (int64_t j = 0; j < pairs; ++j) {
        if (inverse[j] < 0 || inverse[j] >= num_out) return FASTOPS_BAD_INDEX;
    }
    for (int64_t t = 0; t < rows; ++t) {
        float *o = out + t * cols;
        for (int32_t i = 0; i < top_k; ++i) {
            const int64_t j = t * top_k + i;
            const float g = gates[j];
            const float *y = expert_out + static_cast<int64_t>(inverse[j]) * cols;
            if (i == 0) {
                for (int64_t c = 0; c < cols; ++c) o[c] = g * y[c];
            } else {
                for (int64_t c = 0; c < cols; ++c) o[c] += g * y[c];
            }
        }
    }
    return FASTOPS_OK;
}

// The guided head's per-pixel refinement (model/heads.py::guided_refine), one image row at a time:
//   guide  = GELU(conv3x3(pixels * scale + offset, zero padding))        (G channels)
//   hidden = GELU(fuse_w [coarse; guide] + fuse_b)                         (HID channels)
//   out    = coarse + refine_w hidden + refine_b                           (C channels)
// coarse/out (B, H, W, C) and images (B, H, W, CIN) uint8 are channels-last; the weights are
// PyTorch's: guide (G, CIN, 3, 3), fuse (HID, C + G), refine (C, HID). The row is kept planar
// (one contiguous run of x per channel, width rounded up to whole blocks, zero past W) and every
// output channel is summed in registers over a block of pixels, so each multiply-add costs one
// L1 load (summing into memory costs two loads and a store). numpy does the same sums through im2col +
// BLAS, so the two agree to float32 rounding. out may not alias coarse. Rows are shared out over
// the pool, if one is given (the same bits either way).
int32_t fastops_guided_refine(const float *coarse, const uint8_t *images, int64_t batch, int64_t height,
                              int64_t width, int32_t channels, int32_t in_chans, const float *pix_scale,
                              const float *pix_offset, const float *guide_w, const float *guide_b,
                              int32_t guide_ch, const float *fuse_w, const float *fuse_b, int32_t hidden,
                              const float *refine_w, const float *refine_b, float *out, void *pool) {
    const int64_t W = width;
    const int64_t Wv = (width + REFINE_BLOCK - 1) / REFINE_BLOCK * REFINE_BLOCK;  // lanes past W see zeros
    const int64_t padded = Wv + 2;  // one zero column left, >= one right
    const int32_t fuse_in = channels + guide_ch;
    const int64_t image_pix = (height + 2) * in_chans * padded;
    std::vector<float> pix;
    try {
        // Normalised pixels of every image, planar, with a zero row above and below and zero
        // columns left and right (the conv pads after normalising): (batch, height + 2, in_chans, padded).
        pix.assign(static_cast<size_t>(batch * image_pix), 0.0f);
    } catch (const std::bad_alloc &) {
        return FASTOPS_NO_MEMORY;
    }
    for (int64_t b = 0; b < batch; ++b) {
        const uint8_t *img = images + b * height * W * in_chans;
        for (int64_t y = 0; y < height; ++y) {
            for (int32_t c = 0; c < in_chans; ++c) {
                float *row = pix.data() + b * image_pix + ((y + 1) * in_chans + c) * padded;
                const uint8_t *src = img + y * W * in_chans + c;
                const float sc = pix_scale[c], off = pix_offset[c];
                for (int64_t x = 0; x < W; ++x) row[x + 1] = static_cast<float>(src[x * in_chans]) * sc + off;
            }
        }
    }
    std::atomic<bool> failed{false};
    // One image row: independent of every other row once the pixels are normalised.
    auto row_item = [&](int64_t i) {
        const int64_t b = i / height, y = i % height;
        // Per thread and kept between calls: [coarse; guide] (the fuse input), hidden, one output row.
        thread_local std::vector<float> planes, hid, row_out;
        try {
            if (planes.size() < static_cast<size_t>(fuse_in * Wv)) planes.resize(fuse_in * Wv);
            if (hid.size() < static_cast<size_t>(hidden * Wv)) hid.resize(hidden * Wv);
            if (row_out.size() < static_cast<size_t>(Wv)) row_out.resize(Wv);
        } catch (const std::bad_alloc &) {
            failed = true;
            return;
        }
        const float *pix_b = pix.data() + b * image_pix;
        float *coarse_p = planes.data();
        float *guide = planes.data() + channels * Wv;
        const int64_t base = (b * height + y) * W * channels;
        for (int32_t c = 0; c < channels; ++c) {
            float *cr = coarse_p + c * Wv;
            for (int64_t x = 0; x < W; ++x) cr[x] = coarse[base + x * channels + c];
            for (int64_t x = W; x < Wv; ++x) cr[x] = 0.0f;  // the scratch may hold another call's row
        }
        for (int32_t g = 0; g < guide_ch; ++g) {
            const float *wg = guide_w + g * in_chans * 9;
            for (int64_t x0 = 0; x0 < Wv; x0 += REFINE_BLOCK) {
                vecr acc[REFINE_VECS];
                for (int v = 0; v < REFINE_VECS; ++v) acc[v] = vecr{} + guide_b[g];
                for (int32_t c = 0; c < in_chans; ++c) {
                    for (int ky = 0; ky < 3; ++ky) {
                        const float *row = pix_b + ((y + ky) * in_chans + c) * padded + x0;
                        for (int kx = 0; kx < 3; ++kx) {
                            const float wv = wg[(c * 3 + ky) * 3 + kx];
                            for (int v = 0; v < REFINE_VECS; ++v) acc[v] += wv * loadr(row + kx + LANES * v);
                        }
                    }
                }
                for (int v = 0; v < REFINE_VECS; ++v) storer(guide + g * Wv + x0 + LANES * v, acc[v]);
            }
        }
        gelu_inplace(guide, guide_ch * Wv);
        for (int32_t h = 0; h < hidden; ++h) {
            const float *fw = fuse_w + h * fuse_in;
            for (int64_t x0 = 0; x0 < Wv; x0 += REFINE_BLOCK) {
                vecr acc[REFINE_VECS];
                for (int v = 0; v < REFINE_VECS; ++v) acc[v] = vecr{} + fuse_b[h];
                for (int32_t j = 0; j < fuse_in; ++j) {
                    const float *src = planes.data() + j * Wv + x0;
                    for (int v = 0; v < REFINE_VECS; ++v) acc[v] += fw[j] * loadr(src + LANES * v);
                }
                for (int v = 0; v < REFINE_VECS; ++v) storer(hid.data() + h * Wv + x0 + LANES * v, acc[v]);
            }
        }
        gelu_inplace(hid.data(), hidden * Wv);
        for (int32_t c = 0; c < channels; ++c) {
            const float *rw = refine_w + c * hidden;
            for (int64_t x0 = 0; x0 < Wv; x0 += REFINE_BLOCK) {
                vecr acc[REFINE_VECS];
                for (int v = 0; v < REFINE_VECS; ++v) acc[v] = loadr(coarse_p + c * Wv + x0 + LANES * v) + refine_b[c];
                for (int32_t h = 0; h < hidden; ++h) {
                    const float *src = hid.data() + h * Wv + x0;
                    for (int v = 0; v < REFINE_VECS; ++v) acc[v] += rw[h] * loadr(src + LANES * v);
                }
                for (int v = 0; v < REFINE_VECS; ++v) storer(row_out.data() + x0 + LANES * v, acc[v]);
            }
            for (int64_t x = 0; x < W; ++x) out[base + x * channels + c] = row_out[x];
        }
    };
    run_items(pool, batch * height, row_item);
    return failed ? FASTOPS_NO_MEMORY : FASTOPS_OK;
}

// ---- pyramid head (model/pyramid_head.py) ---------------------------------------------------------
// Planar float32 maps (B, C, H, W); every kernel computes whole output rows (items b * H + y,
// shared out over the pool: the same bits for any thread count) and sums every output channel in
// registers over blocks of REFINE_BLOCK pixels. Input rows are always copied into per-thread scratch
// rows padded to whole blocks (zeros past the width; see row_view for why); outputs are summed in
// place where a map's width is a whole number of blocks (every map of the SPEC model), else in
// scratch copied out after. numpy computes the same sums (im2col + BLAS, or shifted adds), so the
// two agree to float32 rounding. Outputs may not alias inputs; every size must be at least 1
// (FASTOPS_BAD_ARGUMENT otherwise: an empty map would size a stride-2 output or a tap wrongly).

}  // extern "C"

namespace {

// The rows of one image's planar map at row y copied into contiguous scratch (channel stride
// block_width(width), zeros past the width). Always a copy: a map's own channel stride is H * W
// floats, a multiple of 4 KiB at the SPEC sizes, so reading the channels of one pixel block in place
// makes every row alias the same L1 sets (measured 2.7x slower for a 48 -> 32 pointwise at 32x64).
inline const float *row_view(const float *map, int32_t channels, int64_t height, int64_t width, int64_t y,
                             std::vector<float> &scratch, int64_t *stride) {
    const int64_t wv = block_width(width);
    for (int32_t c = 0; c < channels; ++c) {
        std::memcpy(scratch.data() + c * wv, map + (c * height + y) * width, width * sizeof(float));
        std::fill(scratch.data() + c * wv + width, scratch.data() + (c + 1) * wv, 0.0f);
    }
    *stride = wv;
    return scratch.data();
}

// Where an output row is summed: in place when the width is whole blocks, else in scratch that
// finish_rows copies out.
inline float *out_view(float *map, int64_t height, int64_t width, int64_t y, std::vector<float> &scratch,
                       int64_t *stride) {
    if (block_width(width) == width) {
        *stride = height * width;
        return map + y * width;
    }
    *stride = block_width(width);
    return scratch.data();
}

inline void finish_rows(const float *rows, int64_t stride, int32_t channels, float *map, int64_t height,
                        int64_t width, int64_t y) {
    if (rows != map + y * width) store_rows(rows, stride, channels, width, map + y * width, height * width);
}

// Zero-padded input rows of a 3x3 conv (padded column q holds x[q - 1]). Stride 1 keeps the row
// as is; stride 2 splits it into even and odd columns, so both strides read contiguous vectors.
inline void padded_row(const float *src, int64_t width, int32_t stride, int64_t plane, float *dst) {
    if (stride == 1) {
        std::memcpy(dst + 1, src, width * sizeof(float));
        return;
    }
    for (int64_t j = 1; 2 * j - 1 < width; ++j) dst[j] = src[2 * j - 1];  // even q = 2j: x[2j - 1]
    for (int64_t j = 0; 2 * j < width; ++j) dst[plane + j] = src[2 * j];   // odd q = 2j + 1: x[2j]
}

}  // namespace

extern "C" {

// uint8 channels-last images (B, H, W, C) -> planar float32 (B, C, H, W) as u8 * scale[c] + offset[c]:
// the pixels as the backbone sees them, laid out for the kernels below.
void fastops_pixels_planar(const uint8_t *images, int64_t batch, int64_t height, int64_t width, int32_t chans,
                           const float *scale, const float *offset, float *out) {
    const int64_t plane = height * width;
    for (int64_t b = 0; b < batch; ++b)
        for (int32_t c = 0; c < chans; ++c) {
            const uint8_t *src = images + b * plane * chans + c;
            float *dst = out + (b * chans + c) * plane;
            const float sc = scale[c], off = offset[c];
            for (int64_t i = 0; i < plane; ++i) dst[i] = static_cast<float>(src[i * chans]) * sc + off;
        }
}

// out = act(conv3x3(x) + bias), zero padding 1, stride 1 or 2; weight (cout, cin, 3, 3).
int32_t fastops_conv3x3(const float *x, int64_t batch, int32_t cin, int64_t height, int64_t width,
                        const float *weight, const float *bias, int32_t cout, int32_t stride, int32_t act,
                        float *out, void *pool) {
    if (stride != 1 && stride != 2) return FASTOPS_BAD_ARGUMENT;
    if (batch <= 0 || cin <= 0 || height <= 0 || width <= 0 || cout <= 0) return FASTOPS_BAD_ARGUMENT;
    const int64_t oh = (height - 1) / stride + 1, ow = (width - 1) / stride + 1;
    const int64_t wv = block_width(ow);
    const int64_t plane = wv + 2, planes_per_row = stride == 1 ? 1 : 2;
    const int64_t row_floats = cin * 3 * planes_per_row * plane;
    std::atomic<bool> failed{false};
    auto row_item = [&](int64_t i) {
        const int64_t b = i / oh, y = i % oh;
        thread_local std::vector<float> rows, acc_rows;
        if (!reserve(rows, row_floats) || !reserve(acc_rows, cout * wv)) {
            failed = true;
            return;
        }
        std::fill(rows.begin(), rows.begin() + row_floats, 0.0f);
        for (int32_t c = 0; c < cin; ++c) {
            for (int ky = 0; ky < 3; ++ky) {
                const int64_t yi = y * stride + ky - 1;
                if (yi >= 0 && yi < height)
                    padded_row(x + ((b * cin + c) * height + yi) * width, width, stride, plane,
                               rows.data() + (c * 3 + ky) * planes_per_row * plane);
            }
        }
        float *out_b = out + b * cout * oh * ow;
        int64_t out_stride;
        float *acc_out = out_view(out_b, oh, ow, y, acc_rows, &out_stride);
        for (int32_t o = 0; o < cout; ++o) {
            const float *wo = weight + static_cast<int64_t>(o) * cin * 9;
            const float b0 = bias != nullptr ? bias[o] : 0.0f;
            float *dst = acc_out + o * out_stride;
            for (int64_t x0 = 0; x0 < wv; x0 += REFINE_BLOCK) {
                vecr acc[REFINE_VECS];
                for (int v = 0; v < REFINE_VECS; ++v) acc[v] = vecr{} + b0;
                for (int32_t c = 0; c < cin; ++c) {
                    for (int ky = 0; ky < 3; ++ky) {
                        const float *base = rows.data() + (c * 3 + ky) * planes_per_row * plane + x0;
                        for (int kx = 0; kx < 3; ++kx) {
                            const float *src = stride == 1 ? base + kx : base + (kx & 1) * plane + kx / 2;
                            const float wk = wo[(c * 3 + ky) * 3 + kx];
                            for (int v = 0; v < REFINE_VECS; ++v) acc[v] += wk * loadr(src + LANES * v);
                        }
                    }
                }
                for (int v = 0; v < REFINE_VECS; ++v) storer(dst + x0 + LANES * v, acc[v]);
            }
            if (act == ACT_GELU) gelu_inplace(dst, ow);
        }
        finish_rows(acc_out, out_stride, cout, out_b, oh, ow, y);
    };
    run_items(pool, batch * oh, row_item);
    return failed ? FASTOPS_NO_MEMORY : FASTOPS_OK;
}

// out = act(weight x + bias) per pixel (a 1x1 conv); weight (cout, cin).
int32_t fastops_pointwise(const float *x, int64_t batch, int32_t cin, int64_t height, int64_t width,
                          const float *weight, const float *bias, int32_t cout, int32_t act, float *out,
                          void *pool) {
    if (batch <= 0 || cin <= 0 || height <= 0 || width <= 0 || cout <= 0) return FASTOPS_BAD_ARGUMENT;
    const int64_t wv = block_width(width), plane = height * width;
    std::atomic<bool> failed{false};
    auto row_item = [&](int64_t i) {
        const int64_t b = i / height, y = i % height;
        thread_local std::vector<float> in_rows, acc_rows;
        if (!reserve(in_rows, cin * wv) || !reserve(acc_rows, cout * wv)) {
            failed = true;
            return;
        }
        int64_t in_stride, out_stride;
        const float *in = row_view(x + b * cin * plane, cin, height, width, y, in_rows, &in_stride);
        float *out_b = out + b * cout * plane;
        float *acc = out_view(out_b, height, width, y, acc_rows, &out_stride);
        for (int32_t o = 0; o < cout; ++o)
            std::fill(acc + o * out_stride, acc + o * out_stride + wv, bias != nullptr ? bias[o] : 0.0f);
        accumulate_rows(in, in_stride, cin, weight, cout, acc, out_stride, wv);
        if (act == ACT_GELU)
            for (int32_t o = 0; o < cout; ++o) gelu_inplace(acc + o * out_stride, width);
        finish_rows(acc, out_stride, cout, out_b, height, width, y);
    };
    run_items(pool, batch * height, row_item);
    return failed ? FASTOPS_NO_MEMORY : FASTOPS_OK;
}

// One fusion of the pyramid head at a finer map (height x width):
//   out = act(bilinear(coarse) + w_pix pixels + bias + w_coord [row; col])
// coarse (B, D, hc, wc) is the coarser map's share, already projected to D channels; pixels
// (B, P, H, W); w_pix (D, P); w_coord (D, 2) weighs each pixel centre's row and column in [-1, 1].
// Bilinear is separable: every coarse row is first stretched to the output width (once per call),
// then each output row is one vectorised blend of two stretched rows.
int32_t fastops_upsample_fuse(const float *coarse, int64_t batch, int32_t d, int64_t hc, int64_t wc,
                              const float *pixels, int32_t p, int64_t height, int64_t width, const float *w_pix,
                              const float *bias, const float *w_coord, int32_t act, float *out, void *pool) {
    if (batch <= 0 || d <= 0 || hc <= 0 || wc <= 0 || p <= 0 || height <= 0 || width <= 0) return FASTOPS_BAD_ARGUMENT;
    const int64_t wv = block_width(width), plane = height * width;
    std::vector<float> wide, cols;
    try {
        wide.resize(static_cast<size_t>(batch * d * hc * wv));
        cols.assign(wv, 0.0f);
    } catch (const std::bad_alloc &) {
        return FASTOPS_NO_MEMORY;
    }
    std::vector<int64_t> x0s(width), x1s(width);
    std::vector<float> fxs(width);
    for (int64_t x = 0; x < width; ++x) {
        bilinear_tap(x, wc, width, &x0s[x], &x1s[x], &fxs[x]);
        cols[x] = static_cast<float>((static_cast<double>(x) + 0.5) / static_cast<double>(width) * 2.0 - 1.0);
    }
    // Stretch every coarse row to the output width (zeros past it), rows shared out like the rest.
    run_items(pool, batch * d * hc, [&](int64_t r) {
        const float *src = coarse + r * wc;
        float *dst = wide.data() + r * wv;
        for (int64_t x = 0; x < width; ++x) dst[x] = src[x0s[x]] * (1.0f - fxs[x]) + src[x1s[x]] * fxs[x];
        std::fill(dst + width, dst + wv, 0.0f);
    });
    std::atomic<bool> failed{false};
    auto row_item = [&](int64_t i) {
        const int64_t b = i / height, y = i % height;
        thread_local std::vector<float> in_rows, acc_rows;
        if (!reserve(in_rows, p * wv) || !reserve(acc_rows, d * wv)) {
            failed = true;
            return;
        }
        int64_t y0, y1, in_stride, out_stride;
        float fy;
        bilinear_tap(y, hc, height, &y0, &y1, &fy);
        const float row = static_cast<float>((static_cast<double>(y) + 0.5) / static_cast<double>(height) * 2.0 - 1.0);
        float *out_b = out + b * d * plane;
        float *acc = out_view(out_b, height, width, y, acc_rows, &out_stride);
        for (int32_t c = 0; c < d; ++c) {
            const float *r0 = wide.data() + ((b * d + c) * hc + y0) * wv, *r1 = wide.data() + ((b * d + c) * hc + y1) * wv;
            float *dst = acc + c * out_stride;
            for (int64_t x = 0; x < wv; ++x) dst[x] = r0[x] * (1.0f - fy) + r1[x] * fy;
        }
        const float *in = row_view(pixels + b * p * plane, p, height, width, y, in_rows, &in_stride);
        accumulate_rows(in, in_stride, p, w_pix, d, acc, out_stride, wv);
        for (int32_t c = 0; c < d; ++c) {
            float *dst = acc + c * out_stride;
            const float along = row * w_coord[2 * c] + (bias != nullptr ? bias[c] : 0.0f), across = w_coord[2 * c + 1];
            for (int64_t x = 0; x < width; ++x) dst[x] += along + cols[x] * across;
            if (act == ACT_GELU) gelu_inplace(dst, width);
        }
        finish_rows(acc, out_stride, d, out_b, height, width, y);
    };
    run_items(pool, batch * height, row_item);
    return failed ? FASTOPS_NO_MEMORY : FASTOPS_OK;
}

// The pyramid head's residual block: out = x + GELU(pw_w depthwise3x3(x) + pw_b), zero padding;
// dw_w (c, 1, 3, 3), pw_w (c, c).
int32_t fastops_mix_block(const float *x, int64_t batch, int32_t c, int64_t height, int64_t width,
                          const float *dw_w, const float *dw_b, const float *pw_w, const float *pw_b, float *out,
                          void *pool) {
    if (batch <= 0 || c <= 0 || height <= 0 || width <= 0) return FASTOPS_BAD_ARGUMENT;
    const int64_t wv = block_width(width), plane = height * width, padded = wv + 2;
    std::atomic<bool> failed{false};
    auto row_item = [&](int64_t i) {
        const int64_t b = i / height, y = i % height;
        thread_local std::vector<float> rows, dw, acc_rows;
        if (!reserve(rows, 3 * padded) || !reserve(dw, c * wv) || !reserve(acc_rows, c * wv)) {
            failed = true;
            return;
        }
        const float *x_b = x + b * c * plane;
        for (int32_t ch = 0; ch < c; ++ch) {
            std::fill(rows.begin(), rows.begin() + 3 * padded, 0.0f);
            for (int ky = 0; ky < 3; ++ky) {
                const int64_t yi = y + ky - 1;
                if (yi >= 0 && yi < height)
                    std::memcpy(rows.data() + ky * padded + 1, x_b + ch * plane + yi * width, width * sizeof(float));
            }
            const float *wk = dw_w + static_cast<int64_t>(ch) * 9;
            for (int64_t x0 = 0; x0 < wv; x0 += REFINE_BLOCK) {
                vecr acc[REFINE_VECS];
                for (int v = 0; v < REFINE_VECS; ++v) acc[v] = vecr{} + (dw_b != nullptr ? dw_b[ch] : 0.0f);
                for (int ky = 0; ky < 3; ++ky)
                    for (int kx = 0; kx < 3; ++kx)
                        for (int v = 0; v < REFINE_VECS; ++v)
                            acc[v] += wk[ky * 3 + kx] * loadr(rows.data() + ky * padded + x0 + kx + LANES * v);
                for (int v = 0; v < REFINE_VECS; ++v) storer(dw.data() + ch * wv + x0 + LANES * v, acc[v]);
            }
        }
        float *out_b = out + b * c * plane;
        int64_t out_stride;
        float *acc = out_view(out_b, height, width, y, acc_rows, &out_stride);
        for (int32_t ch = 0; ch < c; ++ch)
            std::fill(acc + ch * out_stride, acc + ch * out_stride + wv, pw_b != nullptr ? pw_b[ch] : 0.0f);
        accumulate_rows(dw.data(), wv, c, pw_w, c, acc, out_stride, wv);
        for (int32_t ch = 0; ch < c; ++ch) {
            float *dst = acc + ch * out_stride;
            const float *src = x_b + ch * plane + y * width;
            for (int64_t xx = 0; xx < width; ++xx) dst[xx] = src[xx] + gelu_f32(dst[xx]);
        }
        finish_rows(acc, out_stride, c, out_b, height, width, y);
    };
    run_items(pool, batch * height, row_item);
    return failed ? FASTOPS_NO_MEMORY : FASTOPS_OK;
}

}  // extern "C"
