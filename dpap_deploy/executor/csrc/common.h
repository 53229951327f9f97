// Shared by the fused Leaky kernels (leaky.cpp, leaky_pool.cpp): thread split, one forward
// step of a Leaky population, one backward step from the byte code.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

// Split [0, n) over torch's intra-op threads with torch's own OpenMP runtime (built with
// -fopenmp: the extension then uses the `libgomp.so.1` torch has loaded, one thread pool; own
// threads would compete with torch's OpenMP workers, which spin for a while after each parallel
// region: measured, the Leaky kernels ran at half their speed inside a training step that way).
// Built without OpenMP, the range runs on the calling thread. At least `grain` items a thread.
static inline void for_chunks(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn,
                              int64_t grain = 64) {
  at::parallel_for(0, n, grain, [&](int64_t a, int64_t e) { fn(a, e, at::get_thread_num()); });
}

constexpr int64_t TILE = 1024;   // neurons whose state stays in L1 while time runs

// The loops are memory- and vector-width-bound: built with portable flags, the functions that
// run them (DPAP_CLONES) are compiled three times, for AVX-512, AVX2 and the x86-64 baseline,
// and the dynamic loader picks the widest the CPU has (GCC's function multiversioning,
// x86-64 Linux): one binary that runs on any x86-64, as fast as one built for this CPU. The
// step functions below are always inlined into them, so they take the clone's instruction set.
// Elsewhere, the baseline. The float32 operations are the same in every clone (no
// contraction: -ffp-contract=off), so are the results.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define DPAP_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define DPAP_INLINE inline __attribute__((always_inline))
#else
#define DPAP_CLONES
#define DPAP_INLINE inline
#endif

// What the forward keeps for the backward pass (`save`):
//   0: nothing (no gradient wanted: inference);
//   1: one byte per neuron and step, bit 0 the spike, bit 1 whether U lies inside the
//      rectangle surrogate's window (|U - th| < half): all the common backward case reads,
//      a quarter of U's memory traffic;
//   2: the membrane U itself (any surrogate, learnable beta or threshold).
// reset: 0 subtract, 1 zero, 2 none.  current: [T, N] or [N] (static, the same each step).
// One step of n neurons: membrane and last spike in `mem` / `fired`, the spikes into `st`
// (nullable: not wanted), what the backward pass needs into `u` or `code` (SAVE).
template <int RESET, int SAVE>
static DPAP_INLINE void leaky_step(const float* x, float* mem, float* fired, float* st, float* u,
                              uint8_t* code, int64_t n, float b, float th, float half) {
  for (int64_t j = 0; j < n; ++j) {     // the same float32 operations as snnTorch
    float m;
    if (RESET == 1) {
      const float kept = fired[j] != 0.f ? 0.f : mem[j];
      m = b * kept;
      m = m + x[j];
    } else {
      m = b * mem[j];
      m = m + x[j];
      if (RESET == 0) m = m - fired[j] * th;   // fired is 0 or 1: exact
    }
    const float f = m > th ? 1.f : 0.f;
    mem[j] = m; fired[j] = f;
    if (st) st[j] = f;                        // loop-invariant: the compiler unswitches it
    if (SAVE == 2) u[j] = m;
    if (SAVE == 1) code[j] = (uint8_t)((m > th ? 1 : 0) | (std::fabs(m - th) < half ? 2 : 0));
  }
}

// The common backward case (rectangle surrogate, no learnable beta or threshold) from the
// byte code (save 1), one step of n neurons: `acc` (dL/dU[t+1] on entry) becomes dL/dU[t].
// The code is first widened to 32 bits, so that the selects are between values of one width:
// then they vectorise without AVX-512's byte masks. Per element the same float32 operations,
// in the same order, as leaky_backward (leaky.cpp: bit-identical gradients).
static DPAP_INLINE void coded_step(float* acc, const float* gt_, const uint8_t* ct, int64_t n,
                                   bool decay, int64_t reset, float b, float inv_w) {
  constexpr int64_t BLOCK = 256;
  int32_t c[BLOCK];
  for (int64_t j0 = 0; j0 < n; j0 += BLOCK) {
    const int64_t e = std::min(BLOCK, n - j0);
    float* a = acc + j0;
    const float* g = gt_ + j0;
    for (int64_t j = 0; j < e; ++j) c[j] = ct[j0 + j];
    if (decay && reset == 1) {
      for (int64_t j = 0; j < e; ++j) {
        const float m = g[j] * inv_w, dk = (c[j] & 2) ? m : 0.f;
        a[j] = ((c[j] & 1) ? 0.f : a[j]) * b + dk;
      }
    } else if (decay) {
      for (int64_t j = 0; j < e; ++j) {
        const float m = g[j] * inv_w, dk = (c[j] & 2) ? m : 0.f;
        a[j] = a[j] * b + dk;
      }
    } else {
      for (int64_t j = 0; j < e; ++j) {
        const float m = g[j] * inv_w, dk = (c[j] & 2) ? m : 0.f;
        a[j] = a[j] + dk;
      }
    }
  }
}

// dL/dI after a step: stored ([T, N]) or summed over the window (static current, [N]).
static DPAP_INLINE void store_grad(const float* acc, float* out, float* sum, int64_t n,
                              bool is_static) {
  if (is_static) { for (int64_t j = 0; j < n; ++j) sum[j] += acc[j]; }
  else { for (int64_t j = 0; j < n; ++j) out[j] = acc[j]; }
}
