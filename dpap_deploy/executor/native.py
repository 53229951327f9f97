"""Compiled CPU kernels: the fused Leaky window (one pass over memory forward, one backward) and
the 2x2 average pool of spike maps (one pass each way).

The torch-operation path of ``lif.py`` reads and writes each ``[T, B, ...]`` tensor several
times per step; memory bandwidth, not arithmetic, bounds it. This kernel keeps a neuron's
membrane in a register and runs its whole time loop in one go (neurons split over torch's
thread count), computing
exactly the same float32 operations in the same order as snnTorch (built with
``-ffp-contract=off`` so that ``beta * U + I`` is not fused into one rounding): the spikes are
bit-identical. It covers the common case (float32 on CPU, scalar ``beta`` and ``threshold``,
binary spikes); anything else takes the torch path.

Built on first use with ``torch.utils.cpp_extension.load_inline`` (a C++ compiler and ninja are
needed; the build is cached in torch's extension folder). If the build fails the torch path is
used and the reason is kept in ``native.error``; ``DPAP_DEPLOY_NATIVE=0`` turns it off.
"""
from __future__ import annotations

import os
import threading

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

// Split [0, n) over torch's intra-op threads: with torch's own OpenMP runtime when built
// with -fopenmp (the extension then needs `libgomp.so.1`, which torch has already loaded: one
// thread pool), else with plain threads. Plain threads compete with torch's OpenMP workers,
// which spin for a while after each parallel region (a convolution): measured, the Leaky kernels
// ran at half their speed inside a training step that way.
// At least `grain` items per thread: a thread costs tens of microseconds to start.
static void for_chunks(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn,
                       int64_t grain = 64) {
#ifdef _OPENMP
  at::parallel_for(0, n, grain, [&](int64_t a, int64_t e) { fn(a, e, at::get_thread_num()); });
#else
  const int nt = std::max(1, std::min<int>(at::get_num_threads(), (int)((n + grain - 1) / grain)));
  if (nt == 1) { fn(0, n, 0); return; }
  std::vector<std::thread> pool;
  const int64_t step = (n + nt - 1) / nt;
  for (int c = 0; c < nt; ++c) {
    const int64_t a = c * step, e = std::min(n, a + step);
    if (a < e) pool.emplace_back(fn, a, e, c);
  }
  for (auto& th : pool) th.join();
#endif
}

constexpr int64_t TILE = 1024;   // neurons whose state stays in L1 while time runs

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
static inline void leaky_step(const float* x, float* mem, float* fired, float* st, float* u,
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

template <int RESET, int SAVE>
static void leaky_forward_tiles(const float* I, float* s, float* u, uint8_t* code, int64_t T,
                                int64_t N, float b, float th, float half, bool is_static,
                                int64_t c0, int64_t c1) {
  float mem[TILE];
  float fired[TILE];
  for (int64_t c = c0; c < c1; ++c) {
    const int64_t i0 = c * TILE, n = std::min(TILE, N - i0);
    for (int64_t j = 0; j < n; ++j) { mem[j] = 0.f; fired[j] = 0.f; }
    for (int64_t t = 0; t < T; ++t) {
      const int64_t k0 = t * N + i0;
      leaky_step<RESET, SAVE>(is_static ? I + i0 : I + k0, mem, fired, s + k0,
                              SAVE == 2 ? u + k0 : nullptr, SAVE == 1 ? code + k0 : nullptr,
                              n, b, th, half);
    }
  }
}

template <int RESET>
static void leaky_forward_reset(const float* I, float* s, float* u, uint8_t* code, int64_t T,
                                int64_t N, float b, float th, float half, bool is_static,
                                int64_t save) {
  for_chunks((N + TILE - 1) / TILE, [&](int64_t c0, int64_t c1, int) {
    if (save == 0) leaky_forward_tiles<RESET, 0>(I, s, u, code, T, N, b, th, half, is_static, c0, c1);
    else if (save == 1) leaky_forward_tiles<RESET, 1>(I, s, u, code, T, N, b, th, half, is_static, c0, c1);
    else leaky_forward_tiles<RESET, 2>(I, s, u, code, T, N, b, th, half, is_static, c0, c1);
  });
}

// Returns {S, saved}: saved is empty (save 0), the byte code (1) or U (2).
std::vector<torch::Tensor> leaky_forward(torch::Tensor current, int64_t T, double beta_d,
                                         double thr_d, int64_t reset, bool is_static,
                                         int64_t save, double width) {
  auto cur = current.contiguous();
  const int64_t N = is_static ? cur.numel() : cur.numel() / T;
  auto S = torch::empty({T, N}, cur.options());
  torch::Tensor saved = save == 2 ? torch::empty({T, N}, cur.options())
                      : save == 1 ? torch::empty({T, N}, cur.options().dtype(torch::kUInt8))
                                  : torch::empty({0}, cur.options());
  const float* I = cur.data_ptr<float>();
  float* s = S.data_ptr<float>();
  float* u = save == 2 ? saved.data_ptr<float>() : nullptr;
  uint8_t* code = save == 1 ? saved.data_ptr<uint8_t>() : nullptr;
  const float b = (float)beta_d, th = (float)thr_d, half = (float)(width / 2);
  if (reset == 0) leaky_forward_reset<0>(I, s, u, code, T, N, b, th, half, is_static, save);
  else if (reset == 1) leaky_forward_reset<1>(I, s, u, code, T, N, b, th, half, is_static, save);
  else leaky_forward_reset<2>(I, s, u, code, T, N, b, th, half, is_static, save);
  return {S, saved};
}

// The common backward case (rectangle surrogate, no learnable beta or threshold) from the
// byte code (save 1), one step of n neurons: `acc` (dL/dU[t+1] on entry) becomes dL/dU[t].
// No branches the compiler cannot turn into vector selects; per element the same float32
// operations, in the same order, as leaky_backward below (bit-identical gradients).
static inline void coded_step(float* acc, const float* gt_, const uint8_t* ct, int64_t n,
                              bool decay, int64_t reset, float b, float inv_w) {
  if (decay && reset == 1) {
    for (int64_t j = 0; j < n; ++j) {
      const float m = gt_[j] * inv_w, dk = (ct[j] & 2) ? m : 0.f;
      const float a = ((ct[j] & 1) ? 0.f : acc[j]) * b;
      acc[j] = a + dk;
    }
  } else if (decay) {
    for (int64_t j = 0; j < n; ++j) {
      const float m = gt_[j] * inv_w, dk = (ct[j] & 2) ? m : 0.f;
      const float a = acc[j] * b;
      acc[j] = a + dk;
    }
  } else {
    for (int64_t j = 0; j < n; ++j) {
      const float m = gt_[j] * inv_w, dk = (ct[j] & 2) ? m : 0.f;
      acc[j] = acc[j] + dk;
    }
  }
}

// dL/dI after a step: stored ([T, N]) or summed over the window (static current, [N]).
static inline void store_grad(const float* acc, float* out, float* sum, int64_t n,
                              bool is_static) {
  if (is_static) { for (int64_t j = 0; j < n; ++j) sum[j] += acc[j]; }
  else { for (int64_t j = 0; j < n; ++j) out[j] = acc[j]; }
}

torch::Tensor leaky_backward_coded(torch::Tensor grad_s, torch::Tensor code, double beta_d,
                                   int64_t reset, bool is_static, double width) {
  auto g = grad_s.contiguous();
  const int64_t T = code.size(0), N = code.size(1);
  auto G = is_static ? torch::empty({N}, g.options()) : torch::empty({T, N}, g.options());
  const float* gs = g.data_ptr<float>();
  const uint8_t* cd = code.data_ptr<uint8_t>();
  float* out = G.data_ptr<float>();
  const float b = (float)beta_d, inv_w = (float)(1.0 / width);
  for_chunks((N + TILE - 1) / TILE, [&](int64_t c0, int64_t c1, int) {
    float acc[TILE], sum[TILE];
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t i0 = c * TILE, n = std::min(TILE, N - i0);
      for (int64_t j = 0; j < n; ++j) { acc[j] = 0.f; sum[j] = 0.f; }
      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t k0 = t * N + i0;
        coded_step(acc, gs + k0, cd + k0, n, t < T - 1, reset, b, inv_w);
        store_grad(acc, out + k0, sum, n, is_static);
      }
      if (is_static) for (int64_t j = 0; j < n; ++j) out[i0 + j] = sum[j];
    }
  });
  return G;
}

// Returns {grad of the current ([T, N] or [N]), sum for d beta, sum for d threshold}.
// direct: dL/dS * surrogate'(U - th), or empty when `width` > 0 (rectangle computed here).
std::vector<torch::Tensor> leaky_backward(torch::Tensor grad_s, torch::Tensor U, torch::Tensor S,
                                          torch::Tensor direct, double beta_d, double thr_d,
                                          int64_t reset, bool is_static, double width,
                                          bool need_beta, bool need_thr) {
  auto g = grad_s.contiguous();
  const int64_t T = U.size(0), N = U.size(1);
  const bool have_direct = direct.numel() > 0;
  auto D = have_direct ? direct.contiguous() : direct;
  auto G = is_static ? torch::empty({N}, U.options()) : torch::empty({T, N}, U.options());
  const float* gs = g.data_ptr<float>();
  const float* u = U.data_ptr<float>();
  const float* s = S.data_ptr<float>();
  const float* d = have_direct ? D.data_ptr<float>() : nullptr;
  float* out = G.data_ptr<float>();
  const float b = (float)beta_d, th = (float)thr_d, half = (float)(width / 2);
  const float inv_w = width > 0 ? (float)(1.0 / width) : 0.f;
  const int slots = std::max(64, at::get_num_threads());
  std::vector<double> gbs(slots, 0.0), gts(slots, 0.0);
  for_chunks((N + TILE - 1) / TILE, [&](int64_t c0, int64_t c1, int slot) {
    float acc[TILE], sum[TILE], dk[TILE];
    double gb = 0.0, gt = 0.0;
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t i0 = c * TILE, n = std::min(TILE, N - i0);
      for (int64_t j = 0; j < n; ++j) { acc[j] = 0.f; sum[j] = 0.f; }
      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t k0 = t * N + i0;
        if (have_direct)
          for (int64_t j = 0; j < n; ++j) dk[j] = d[k0 + j];
        else   // both values computed, then selected: the loop vectorises
          for (int64_t j = 0; j < n; ++j) {
            const float m = gs[k0 + j] * inv_w;
            dk[j] = std::fabs(u[k0 + j] - th) < half ? m : 0.f;
          }
        if (t < T - 1) {
          if (reset == 1)
            for (int64_t j = 0; j < n; ++j) acc[j] = (s[k0 + j] != 0.f ? 0.f : acc[j]) * b;
          else
            for (int64_t j = 0; j < n; ++j) acc[j] = acc[j] * b;
        }
        for (int64_t j = 0; j < n; ++j) acc[j] = acc[j] + dk[j];
        store_grad(acc, out + k0, sum, n, is_static);
        if (need_beta && t > 0)
          for (int64_t j = 0; j < n; ++j) {
            float prev = u[k0 - N + j];
            if (reset == 1 && s[k0 - N + j] != 0.f) prev = 0.f;
            gb += (double)acc[j] * (double)prev;
          }
        if (need_thr)
          for (int64_t j = 0; j < n; ++j) {
            gt -= (double)dk[j];
            if (reset == 0 && t > 0 && s[k0 - N + j] != 0.f) gt -= (double)acc[j];
          }
      }
      if (is_static) for (int64_t j = 0; j < n; ++j) out[i0 + j] = sum[j];
    }
    gbs[slot] = gb;
    gts[slot] = gt;
  });
  double gb = 0.0, gt = 0.0;
  for (int c = 0; c < slots; ++c) { gb += gbs[c]; gt += gts[c]; }
  auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  return {G, torch::full({}, gb, opts), torch::full({}, gt, opts)};
}

// A Leaky population whose only reader is a 2x2 average pool (stride 2, even H and W), both
// in one pass each way: the pool is computed from the spikes while they are in L1, and the
// backward pass spreads the pool's gradient inside the Leaky loop, so the [T, N] spikes (unless
// asked for) and their gradient never go through memory. One step of the current, in memory
// order, is a [P, H, W, Cm] map: the default layout has P = B * C, Cm = 1; channels-last
// P = B, Cm = C. A unit is one output row (p, i): map rows 2i and 2i + 1, L = 2 W Cm
// neurons, consecutive in memory; tiles are runs of whole units. The pooled output
// [T * B, C, H / 2, W / 2] has any strides (os*); row (t, b) of it is step t, sample b.
struct PoolGeom {
  int64_t B, Cp, H, W, Cm;
  int64_t L() const { return 2 * W * Cm; }
  int64_t units() const { return B * Cp * (H / 2); }
  int64_t per_tile() const { return std::max<int64_t>(1, TILE / L()); }
  // offset of unit u's output row at step t, given the output's strides
  int64_t row(int64_t u, int64_t t, const int64_t* st) const {
    const int64_t h = H / 2, p = u / h, i = u % h;
    return (t * B + p / Cp) * st[0] + (p % Cp) * st[1] + i * st[2];
  }
};

// The pool of binary spikes: every partial sum is a small integer, exact in any order, so the
// result equals aten's ((x00 + x01) + x10) + x11, times 0.25. Per output row, the window
// sums go into `buf` ([w, Cm], vectorised over Cm or, for Cm = 1, over the row), then to the
// output in its layout: a plain copy when it is laid out as [w, Cm], else transposed.
static inline void pool_units(const float* fired, float* out, float* buf, const int64_t* rows,
                              const PoolGeom& g, int64_t ua, int64_t ub, int64_t t,
                              const int64_t* os) {
  const int64_t L = g.L(), WC = g.W * g.Cm, w = g.W / 2, Cm = g.Cm, n = (ub - ua) * L;
  const int64_t step = t * g.B * os[0];
  if (Cm == 1) {       // pairs along the rows of the whole tile, then row 2i + row 2i + 1
    for (int64_t k = 0; k < n / 2; ++k) buf[k] = fired[2 * k] + fired[2 * k + 1];
    for (int64_t u = 0; u < ub - ua; ++u) {
      const float* h0 = buf + u * g.W;
      float* o = out + step + rows[u];
      if (os[3] == 1) { for (int64_t j = 0; j < w; ++j) o[j] = (h0[j] + h0[w + j]) * 0.25f; }
      else { for (int64_t j = 0; j < w; ++j) o[j * os[3]] = (h0[j] + h0[w + j]) * 0.25f; }
    }
    return;
  }
  for (int64_t u = 0; u < ub - ua; ++u) {
    const float* f0 = fired + u * L;
    const float* f1 = f0 + WC;
    for (int64_t j = 0; j < w; ++j) {
      const float* a0 = f0 + 2 * j * Cm; const float* a1 = a0 + Cm;
      const float* b0 = f1 + 2 * j * Cm; const float* b1 = b0 + Cm;
      float* bj = buf + j * Cm;
      for (int64_t c = 0; c < Cm; ++c) bj[c] = (a0[c] + a1[c]) + (b0[c] + b1[c]);
    }
    float* o = out + step + rows[u];
    if (os[1] == 1 && os[3] == Cm) {     // [w, Cm] in memory: channels-last
      for (int64_t k = 0; k < w * Cm; ++k) o[k] = buf[k] * 0.25f;
    } else {
      for (int64_t c = 0; c < Cm; ++c)
        for (int64_t j = 0; j < w; ++j) o[c * os[1] + j * os[3]] = buf[j * Cm + c] * 0.25f;
    }
  }
}

// dL/dS of each neuron of units [ua, ub) at step t: its window's pooled gradient times 0.25,
// gathered per output row into `buf` ([w, Cm]) and spread over the window's four neurons.
static inline void unpool_units(const float* gp, float* gs, float* buf, const int64_t* rows,
                                const PoolGeom& g, int64_t ua, int64_t ub, int64_t t,
                                const int64_t* gst) {
  const int64_t L = g.L(), WC = g.W * g.Cm, w = g.W / 2, Cm = g.Cm;
  const int64_t step = t * g.B * gst[0];
  for (int64_t u = 0; u < ub - ua; ++u) {
    const float* gr = gp + step + rows[u];
    float* s0 = gs + u * L;
    float* s1 = s0 + WC;
    if (Cm == 1) {
      for (int64_t j = 0; j < w; ++j) {
        const float q = gr[j * gst[3]] * 0.25f;
        s0[2 * j] = q; s0[2 * j + 1] = q; s1[2 * j] = q; s1[2 * j + 1] = q;
      }
      continue;
    }
    if (gst[1] == 1 && gst[3] == Cm) {
      for (int64_t k = 0; k < w * Cm; ++k) buf[k] = gr[k] * 0.25f;
    } else {
      for (int64_t c = 0; c < Cm; ++c)
        for (int64_t j = 0; j < w; ++j) buf[j * Cm + c] = gr[c * gst[1] + j * gst[3]] * 0.25f;
    }
    for (int64_t j = 0; j < w; ++j) {
      float* a0 = s0 + 2 * j * Cm; float* a1 = a0 + Cm;
      float* b0 = s1 + 2 * j * Cm; float* b1 = b0 + Cm;
      const float* bj = buf + j * Cm;
      for (int64_t c = 0; c < Cm; ++c) { a0[c] = bj[c]; a1[c] = bj[c]; b0[c] = bj[c]; b1[c] = bj[c]; }
    }
  }
}

// fn(ua, ub, i0, n, rows) for each tile of units [u0, u1): at most per_tile() whole units,
// neurons [i0, i0 + n), rows[k] the output row of unit ua + k at step 0 under strides st.
template <typename F>
static inline void unit_tiles(const PoolGeom& g, int64_t u0, int64_t u1, const int64_t* st,
                              F fn) {
  const int64_t L = g.L(), per = g.per_tile();
  std::vector<int64_t> rows(per);
  for (int64_t ua = u0; ua < u1; ua += per) {
    const int64_t ub = std::min(u1, ua + per);
    for (int64_t u = ua; u < ub; ++u) rows[u - ua] = g.row(u, 0, st);
    fn(ua, ub, ua * L, (ub - ua) * L, rows.data());
  }
}

template <int RESET, int SAVE>
static void leaky_pool_forward_units(const float* I, float* s, uint8_t* code, float* out,
                                     const PoolGeom& g, const int64_t* os, int64_t T, int64_t N,
                                     float b, float th, float half, bool is_static, int64_t u0,
                                     int64_t u1) {
  const int64_t L = g.L(), per = g.per_tile();
  std::vector<float> mem(per * L), fired(per * L), buf(per * L / 2);
  unit_tiles(g, u0, u1, os, [&](int64_t ua, int64_t ub, int64_t i0, int64_t n,
                                const int64_t* rows) {
    std::fill(mem.begin(), mem.begin() + n, 0.f);
    std::fill(fired.begin(), fired.begin() + n, 0.f);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t k0 = t * N + i0;
      leaky_step<RESET, SAVE>(is_static ? I + i0 : I + k0, mem.data(), fired.data(),
                              s ? s + k0 : nullptr, nullptr, SAVE == 1 ? code + k0 : nullptr,
                              n, b, th, half);
      pool_units(fired.data(), out, buf.data(), rows, g, ua, ub, t, os);
    }
  });
}

// Returns {pooled [T * B, C, H / 2, W / 2] (channels-last if out_cl), spikes [T, N] or empty,
// byte code [T, N] or empty}. save: 0 nothing, 1 the byte code (leaky_forward).
std::vector<torch::Tensor> leaky_pool_forward(torch::Tensor current, int64_t T, double beta_d,
                                              double thr_d, int64_t reset, bool is_static,
                                              int64_t save, double width, int64_t B, int64_t C,
                                              int64_t H, int64_t W, bool in_cl, bool out_cl,
                                              bool spikes) {
  auto cur = current.contiguous();
  const PoolGeom g{B, in_cl ? 1 : C, H, W, in_cl ? C : 1};
  const int64_t N = B * C * H * W;
  auto fmt = out_cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  auto out = torch::empty({T * B, C, H / 2, W / 2}, cur.options().memory_format(fmt));
  auto S = spikes ? torch::empty({T, N}, cur.options()) : torch::empty({0}, cur.options());
  auto code = save == 1 ? torch::empty({T, N}, cur.options().dtype(torch::kUInt8))
                        : torch::empty({0}, cur.options().dtype(torch::kUInt8));
  const int64_t os[4] = {out.stride(0), out.stride(1), out.stride(2), out.stride(3)};
  const float* I = cur.data_ptr<float>();
  float* s = spikes ? S.data_ptr<float>() : nullptr;
  uint8_t* cd = save == 1 ? code.data_ptr<uint8_t>() : nullptr;
  float* o = out.data_ptr<float>();
  const float b = (float)beta_d, th = (float)thr_d, half = (float)(width / 2);
  const int64_t grain = std::max<int64_t>(1, g.per_tile());
  for_chunks(g.units(), [&](int64_t u0, int64_t u1, int) {
#define DPAP_LP(R, SV) leaky_pool_forward_units<R, SV>(I, s, cd, o, g, os, T, N, b, th, half, is_static, u0, u1)
    if (reset == 0) { if (save) DPAP_LP(0, 1); else DPAP_LP(0, 0); }
    else if (reset == 1) { if (save) DPAP_LP(1, 1); else DPAP_LP(1, 0); }
    else { if (save) DPAP_LP(2, 1); else DPAP_LP(2, 0); }
#undef DPAP_LP
  }, grain);
  return {out, S, code};
}

// The gradient of the current ([T, N] or [N], memory order) from the pooled output's gradient
// [T * B, C, H / 2, W / 2] (any strides) and the byte code.
torch::Tensor leaky_pool_backward_coded(torch::Tensor grad_pooled, torch::Tensor code,
                                        double beta_d, int64_t reset, bool is_static,
                                        double width, int64_t B, int64_t C, int64_t H, int64_t W,
                                        bool in_cl) {
  const int64_t T = code.size(0), N = code.size(1);
  const PoolGeom g{B, in_cl ? 1 : C, H, W, in_cl ? C : 1};
  auto G = is_static ? torch::empty({N}, grad_pooled.options())
                     : torch::empty({T, N}, grad_pooled.options());
  const int64_t gst[4] = {grad_pooled.stride(0), grad_pooled.stride(1), grad_pooled.stride(2),
                          grad_pooled.stride(3)};
  const float* gp = grad_pooled.data_ptr<float>();
  const uint8_t* cd = code.data_ptr<uint8_t>();
  float* out = G.data_ptr<float>();
  const float b = (float)beta_d, inv_w = (float)(1.0 / width);
  const int64_t L = g.L(), per = g.per_tile();
  for_chunks(g.units(), [&](int64_t u0, int64_t u1, int) {
    std::vector<float> acc(per * L), sum(per * L), gs(per * L), buf(L / 4);
    unit_tiles(g, u0, u1, gst, [&](int64_t ua, int64_t ub, int64_t i0, int64_t n,
                                   const int64_t* rows) {
      std::fill(acc.begin(), acc.begin() + n, 0.f);
      std::fill(sum.begin(), sum.begin() + n, 0.f);
      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t k0 = t * N + i0;
        unpool_units(gp, gs.data(), buf.data(), rows, g, ua, ub, t, gst);
        coded_step(acc.data(), gs.data(), cd + k0, n, t < T - 1, reset, b, inv_w);
        store_grad(acc.data(), out + k0, sum.data(), n, is_static);
      }
      if (is_static) std::copy(sum.begin(), sum.begin() + n, out + i0);
    });
  }, std::max<int64_t>(1, per));
  return G;
}

// 2x2 average pooling, stride 2, no padding, floor: ((x00 + x01) + x10) + x11, times 0.25
// (aten's order; a division by 4 rounds the same), of [P, C, H, W] maps of either layout,
// contiguous or channels-last (what a convolution on a channels-last input makes), with the
// output in the layout asked for: a pool between two layouts converts on the way instead of a
// separate copy. The loops run along the input's (forward) or the gradient's (backward) memory
// order, vectorised over W or over C. The gradient: dL/dy * 0.25 into each of the window's
// four inputs (odd edges: zero).
torch::Tensor avg_pool2x2_forward_4d(torch::Tensor x, bool in_cl, bool out_cl) {
  const int64_t P = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t h = H / 2, w = W / 2;
  auto xc = x.contiguous(in_cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  auto out = torch::empty({P, C, h, w}, xc.options().memory_format(
      out_cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
  const float* in = xc.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int64_t op = out.stride(0), oc = out.stride(1), oi = out.stride(2), oj = out.stride(3);
  if (!in_cl) {
    for_chunks(P * C, [&](int64_t r0, int64_t r1, int) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t p = r / C, c = r % C;
        for (int64_t i = 0; i < h; ++i) {
          const float* a = in + (r * H + 2 * i) * W;
          const float* b = a + W;
          float* orow = o + p * op + c * oc + i * oi;
          for (int64_t j = 0; j < w; ++j) {
            float s = a[2 * j] + a[2 * j + 1];
            s = s + b[2 * j];
            s = s + b[2 * j + 1];
            orow[j * oj] = s * 0.25f;
          }
        }
      }
    }, std::max<int64_t>(1, (1 << 18) / std::max<int64_t>(1, H * W)));
  } else {
    for_chunks(P * h, [&](int64_t r0, int64_t r1, int) {
      std::vector<float> buf(w * C);   // one output row, [w, C]: computed along C, then stored
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t p = r / h, i = r % h;
        const float* a = in + ((p * H + 2 * i) * W) * C;
        const float* b = a + W * C;
        for (int64_t j = 0; j < w; ++j) {
          const float* a0 = a + 2 * j * C; const float* a1 = a0 + C;
          const float* b0 = b + 2 * j * C; const float* b1 = b0 + C;
          float* bj = buf.data() + j * C;
          for (int64_t c = 0; c < C; ++c) {
            float s = a0[c] + a1[c];
            s = s + b0[c];
            s = s + b1[c];
            bj[c] = s * 0.25f;
          }
        }
        float* orow = o + p * op + i * oi;
        if (oc == 1) std::copy(buf.begin(), buf.end(), orow);    // channels-last out: [w, C]
        else
          for (int64_t c = 0; c < C; ++c)
            for (int64_t j = 0; j < w; ++j) orow[c * oc + j * oj] = buf[j * C + c];
      }
    }, std::max<int64_t>(1, (1 << 18) / std::max<int64_t>(1, 4 * w * C)));
  }
  return out;
}

// g: [P, C, h, w], any strides; the gradient of the input is written in its layout (in_cl).
torch::Tensor avg_pool2x2_backward_4d(torch::Tensor g, int64_t H, int64_t W, bool in_cl) {
  const int64_t P = g.size(0), C = g.size(1), h = g.size(2), w = g.size(3);
  auto fmt = in_cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  auto opts = g.options().memory_format(fmt);
  auto out = torch::empty({P, C, H, W}, opts);   // (torch::zeros ignores the memory format)
  if (2 * h != H || 2 * w != W) out.zero_();
  const float* gi = g.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int64_t gp = g.stride(0), gc = g.stride(1), gy = g.stride(2), gx = g.stride(3);
  if (!in_cl) {
    for_chunks(P * C, [&](int64_t r0, int64_t r1, int) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t p = r / C, c = r % C;
        for (int64_t i = 0; i < h; ++i) {
          const float* grow = gi + p * gp + c * gc + i * gy;
          float* a = o + (r * H + 2 * i) * W;
          float* b = a + W;
          for (int64_t j = 0; j < w; ++j) {
            const float q = grow[j * gx] * 0.25f;
            a[2 * j] = q; a[2 * j + 1] = q; b[2 * j] = q; b[2 * j + 1] = q;
          }
        }
      }
    }, std::max<int64_t>(1, (1 << 18) / std::max<int64_t>(1, H * W)));
  } else {
    for_chunks(P * h, [&](int64_t r0, int64_t r1, int) {
      std::vector<float> buf(w * C);   // one gradient row gathered as [w, C], then spread
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t p = r / h, i = r % h;
        float* a = o + ((p * H + 2 * i) * W) * C;
        float* b = a + W * C;
        const float* grow = gi + p * gp + i * gy;
        for (int64_t c = 0; c < C; ++c)
          for (int64_t j = 0; j < w; ++j) buf[j * C + c] = grow[c * gc + j * gx];
        for (int64_t j = 0; j < w; ++j) {
          float* a0 = a + 2 * j * C; float* a1 = a0 + C;
          float* b0 = b + 2 * j * C; float* b1 = b0 + C;
          const float* bj = buf.data() + j * C;
          for (int64_t c = 0; c < C; ++c) {
            const float q = bj[c] * 0.25f;
            a0[c] = q; a1[c] = q; b0[c] = q; b1[c] = q;
          }
        }
      }
    }, std::max<int64_t>(1, (1 << 18) / std::max<int64_t>(1, 4 * w * C)));
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Synapses whose input is mostly zeros (spikes, pooled spikes): the products of the nonzero
// inputs only. Contraction is allowed here (one fused multiply-add per term, as the BLAS and
// oneDNN kernels do); the Leaky code above keeps -ffp-contract=off.
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")
typedef float vf __attribute__((vector_size(64)));   // 16 floats: one AVX-512 register, two AVX2
constexpr int64_t VL = 16, VB = 4;                   // a block: VB vectors (64 outputs) in registers
static inline vf vload(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
static inline int64_t padded(int64_t n) { return (n + VL - 1) / VL * VL; }

// The nonzeros of each row of x [M, K] (contiguous) in CSR form, k ascending: {ptr [M + 1]
// int64, idx int32, val float}; empty tensors when there are more than max_density * M * K.
// idx is k, or with inner > 0 (a row of [K / inner, inner] items) (k / inner) << 16 | k % inner.
// The fill pass is branch-free: it writes every element to the row's next free slot and moves
// on only past a nonzero, so a row may write one element into the following row's first slot,
// which that row overwrites later in the same chunk. Where that slot would lie in the next
// chunk (the rest of the chunk is empty), the row is filled with a branch instead.
std::vector<torch::Tensor> nonzeros(torch::Tensor x, double max_density, int64_t inner) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.scalar_type() == torch::kFloat32);
  const int64_t M = x.size(0), K = x.size(1);
  TORCH_CHECK(inner == 0 || (K % inner == 0 && inner < (1 << 16) && K / inner < (1 << 15)));
  std::vector<int32_t> code(K);       // what idx holds for column k
  for (int64_t k = 0; k < K; ++k)
    code[k] = inner ? (int32_t)(((k / inner) << 16) | (k % inner)) : (int32_t)k;
  const int32_t* cd = code.data();
  const float* xp = x.data_ptr<float>();
  auto ptr = torch::empty({M + 1}, x.options().dtype(torch::kInt64));
  int64_t* p = ptr.data_ptr<int64_t>();
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, K));
  at::parallel_for(0, M, grain, [&](int64_t a, int64_t e) {
    for (int64_t r = a; r < e; ++r) {
      const float* row = xp + r * K;
      int32_t c = 0;
      for (int64_t k = 0; k < K; ++k) c += row[k] != 0.f ? 1 : 0;
      p[r + 1] = c;
    }
  });
  p[0] = 0;
  for (int64_t r = 0; r < M; ++r) p[r + 1] += p[r];
  if ((double)p[M] > max_density * (double)(M * K)) return {};
  auto idx = torch::empty({p[M] + 1}, x.options().dtype(torch::kInt32));
  auto val = torch::empty({p[M] + 1}, x.options());
  int32_t* ip = idx.data_ptr<int32_t>();
  float* vp = val.data_ptr<float>();
  at::parallel_for(0, M, grain, [&](int64_t a, int64_t e) {
    for (int64_t r = a; r < e; ++r) {
      const float* row = xp + r * K;
      int64_t c = p[r];
      if (p[r + 1] == p[e]) {
        for (int64_t k = 0; k < K; ++k)
          if (row[k] != 0.f) { ip[c] = cd[k]; vp[c] = row[k]; ++c; }
      } else {
        for (int64_t k = 0; k < K; ++k) {
          const float v = row[k];
          ip[c] = cd[k]; vp[c] = v; c += v != 0.f ? 1 : 0;
        }
      }
    }
  });
  return {ptr, idx, val};
}

// acc (NV vectors) += v * b[k] over the nonzeros (k, v) in [c0, c1), b's rows `ld` apart.
template <int NV>
static inline void axpy_nonzeros(vf* acc, const int32_t* ip, const float* vp, int64_t c0,
                                 int64_t c1, const float* b, int64_t ld) {
  for (int64_t c = c0; c < c1; ++c) {
    const float v = vp[c];
    const float* w = b + (int64_t)ip[c] * ld;
    for (int q = 0; q < NV; ++q) acc[q] = acc[q] + v * vload(w + q * VL);
  }
}

// One row's block of NV vectors: sum = init; for each run of `kc` consecutive k: acc = the
// run's terms, one fused multiply-add each from zero, in k order; sum = sum + acc. With kc the
// BLAS kernel's own block depth that is its order of operations (see sparse.py: same bits).
template <int NV>
static inline void row_block(vf* sum, const int32_t* ip, const float* vp, int64_t c0, int64_t c1,
                             const float* b, int64_t ld, int64_t kc) {
  int64_t c = c0;
  while (c < c1) {
    const int64_t end = ((int64_t)ip[c] / kc + 1) * kc;
    int64_t e = c;
    while (e < c1 && ip[e] < end) ++e;
    vf acc[VB] = {};
    axpy_nonzeros<NV>(acc, ip, vp, c, e, b, ld);
    for (int q = 0; q < NV; ++q) sum[q] = sum[q] + acc[q];
    c = e;
  }
}

// Y [M, N] = X B (+ bias), X as CSR, B [K, NP] with NP = padded(N) (zero columns past N);
// bias, if any, padded the same way. Rows split over the threads; within a thread's rows, one
// block of 64 columns at a time, so that block of B stays in L2.
torch::Tensor csr_matmul(torch::Tensor ptr, torch::Tensor idx, torch::Tensor val,
                         torch::Tensor b, torch::Tensor bias, int64_t N, int64_t kc) {
  const int64_t M = ptr.size(0) - 1, NP = b.size(1);
  TORCH_CHECK(b.is_contiguous() && NP == padded(N) && kc > 0);
  TORCH_CHECK(bias.numel() == 0 || (bias.is_contiguous() && bias.numel() == NP));
  auto Y = torch::empty({M, N}, b.options());
  const int64_t* p = ptr.data_ptr<int64_t>();
  const int32_t* ip = idx.data_ptr<int32_t>();
  const float* vp = val.data_ptr<float>();
  const float* B = b.data_ptr<float>();
  const float* bp = bias.numel() ? bias.data_ptr<float>() : nullptr;
  float* y = Y.data_ptr<float>();
  at::parallel_for(0, M, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t j0 = 0; j0 < NP; j0 += VB * VL) {
      const int64_t nv = std::min<int64_t>(VB, (NP - j0) / VL), n = std::min(VB * VL, N - j0);
      for (int64_t r = r0; r < r1; ++r) {
        vf sum[VB] = {};
        if (bp) for (int64_t q = 0; q < nv; ++q) sum[q] = vload(bp + j0 + q * VL);
        const int64_t c0 = p[r], c1 = p[r + 1];
        if (nv == 4) row_block<4>(sum, ip, vp, c0, c1, B + j0, NP, kc);
        else if (nv == 3) row_block<3>(sum, ip, vp, c0, c1, B + j0, NP, kc);
        else if (nv == 2) row_block<2>(sum, ip, vp, c0, c1, B + j0, NP, kc);
        else row_block<1>(sum, ip, vp, c0, c1, B + j0, NP, kc);
        float tmp[VB * VL];
        for (int q = 0; q < VB; ++q) vstore(tmp + q * VL, sum[q]);
        std::copy(tmp, tmp + n, y + r * N + j0);
      }
    }
  });
  return Y;
}

// The CSR of X^T [K, M] from that of X [M, K] (counting sort: rows ascending within a column).
std::vector<torch::Tensor> csr_transpose(torch::Tensor ptr, torch::Tensor idx, torch::Tensor val,
                                         int64_t K) {
  const int64_t M = ptr.size(0) - 1;
  const int64_t* p = ptr.data_ptr<int64_t>();
  const int64_t nnz = p[M];
  const int32_t* ip = idx.data_ptr<int32_t>();
  const float* vp = val.data_ptr<float>();
  auto tptr = torch::zeros({K + 1}, ptr.options());
  auto tidx = torch::empty({nnz + 1}, idx.options());
  auto tval = torch::empty({nnz + 1}, val.options());
  int64_t* tp = tptr.data_ptr<int64_t>();
  int32_t* ti = tidx.data_ptr<int32_t>();
  float* tv = tval.data_ptr<float>();
  for (int64_t c = 0; c < nnz; ++c) tp[ip[c] + 1]++;
  for (int64_t k = 0; k < K; ++k) tp[k + 1] += tp[k];
  std::vector<int64_t> next(tp, tp + K);
  for (int64_t r = 0; r < M; ++r)
    for (int64_t c = p[r]; c < p[r + 1]; ++c) {
      const int64_t d = next[ip[c]]++;
      ti[d] = (int32_t)r; tv[d] = vp[c];
    }
  return {tptr, tidx, tval};
}


// A 2-D convolution (stride 1, no dilation, one group, zero padding ph, pw) of a mostly-zero
// channels-last input [P, C, H, W], given as the CSR of its [P * H, W * C] rows (nonzeros with
// inner = C: idx = x << 16 | c), and the weight rearranged as wr [KH, KW, C, OP] (OP =
// padded(O), zeros past O). Output channels-last [P, O, OH, OW]. One output row at a time: each
// nonzero of the KH input rows that feed it is spread over the KW outputs it reaches, in a row
// buffer with margins that stays in L1. The input rows are taken in order and each row's
// nonzeros in (x, c) order, so every output sums its terms in (kh, kw, c) order with one fused
// multiply-add each, starting from zero, the bias added last: oneDNN's direct convolution's
// order on this machine (bit-identical outputs, tests).
template <int KWT>
static void conv_rows(const int64_t* p, const int32_t* ip, const float* vp, const float* w,
                      const float* bp, float* out, int64_t i0, int64_t i1, int64_t H,
                      int64_t C, int64_t O, int64_t OP, int64_t KH, int64_t KW_, int64_t ph,
                      int64_t pw, int64_t OH, int64_t OW) {
  const int64_t KW = KWT > 0 ? KWT : KW_, BW = OW + KW - 1 + pw;
  std::vector<float> buf((BW + KW) * OP + VL);
  for (int64_t i = i0; i < i1; ++i)
    for (int64_t y = 0; y < OH; ++y) {
      std::fill(buf.begin(), buf.end(), 0.f);
      for (int64_t dh = 0; dh < KH; ++dh) {
        const int64_t h = y + dh - ph;
        if (h < 0 || h >= H) continue;
        const float* wh = w + dh * KW * C * OP;
        for (int64_t c = p[i * H + h], ce = p[i * H + h + 1]; c < ce; ++c) {
          const int64_t x = ip[c] >> 16, ch = ip[c] & 0xffff;
          const float v = vp[c];
          // output x - dw + pw sits at buf[x - dw + KW - 1]
          float* o = buf.data() + (x + KW - 1) * OP;
          const float* wc = wh + ch * OP;
          for (int64_t dw = 0; dw < KW; ++dw) {
            float* od = o - dw * OP;
            const float* wd = wc + dw * C * OP;
            for (int64_t q = 0; q < OP; q += VL) vstore(od + q, vload(od + q) + v * vload(wd + q));
          }
        }
      }
      float* orow = out + (i * OH + y) * OW * O;
      for (int64_t x = 0; x < OW; ++x) {
        const float* s = buf.data() + (x + KW - 1 - pw) * OP;
        float* o = orow + x * O;
        if (bp) { for (int64_t j = 0; j < O; ++j) o[j] = s[j] + bp[j]; }
        else { for (int64_t j = 0; j < O; ++j) o[j] = s[j]; }
      }
    }
}

torch::Tensor csr_conv2d(torch::Tensor ptr, torch::Tensor idx, torch::Tensor val,
                         torch::Tensor wr, torch::Tensor bias, int64_t P, int64_t H, int64_t W,
                         int64_t O, int64_t ph, int64_t pw) {
  const int64_t KH = wr.size(0), KW = wr.size(1), C = wr.size(2), OP = wr.size(3);
  TORCH_CHECK(wr.is_contiguous() && OP == padded(O) && ptr.size(0) == P * H + 1);
  TORCH_CHECK(bias.numel() == 0 || bias.numel() == O);
  const int64_t OH = H + 2 * ph - KH + 1, OW = W + 2 * pw - KW + 1;
  TORCH_CHECK(OH > 0 && OW > 0 && pw < KW && ph < KH);
  auto out = torch::empty({P, O, OH, OW}, wr.options().memory_format(at::MemoryFormat::ChannelsLast));
  const int64_t* p = ptr.data_ptr<int64_t>();
  const int32_t* ip = idx.data_ptr<int32_t>();
  const float* vp = val.data_ptr<float>();
  const float* w = wr.data_ptr<float>();
  auto bc = bias.contiguous();
  const float* bp = bias.numel() ? bc.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  at::parallel_for(0, P, 1, [&](int64_t a, int64_t e) {
    if (KW == 3) conv_rows<3>(p, ip, vp, w, bp, op, a, e, H, C, O, OP, KH, KW, ph, pw, OH, OW);
    else conv_rows<0>(p, ip, vp, w, bp, op, a, e, H, C, O, OP, KH, KW, ph, pw, OH, OW);
  });
  return out;
}

// Its weight gradient, [KH, KW, C, OP], from the same CSR: each nonzero input times the output
// gradient gout (channels-last [P, O, OH, OW]) at each output it fed. The images are split
// into one fixed range per thread, each summed into its own buffer, inputs in memory order; the
// buffers are then added in range order: with oneDNN's split of the batch, oneDNN's numbers
// (bit-identical on this machine, tests); the same numbers for the same thread count. Within a
// range, one image at a time (its output gradient stays in L1): its nonzeros sorted by channel
// (memory order kept), then per channel and row of taps the KW taps' sums for a block of 16 NV
// outputs stay in registers while its nonzeros go by (an output the input did not feed reads a
// zero row).
template <int KWT, int NV>
static void conv_grad_weight_channel(float* gw, const int64_t* base, const uint16_t* valid,
                                     const float* vals, int64_t n, const float* g,
                                     const float* zero, const float* gend, float* tail, int64_t O,
                                     int64_t OW, int64_t C, int64_t OP, int64_t j0, int64_t dh) {
  vf acc[KWT][NV];                 // one row of taps: fully unrolled, in registers
#pragma GCC unroll 8
  for (int dw = 0; dw < KWT; ++dw)
#pragma GCC unroll 4
    for (int q = 0; q < NV; ++q) acc[dw][q] = vload(gw + (dh * KWT + dw) * C * OP + j0 + q * VL);
  for (int64_t e = 0; e < n; ++e) {
    const float v = vals[e];
#pragma GCC unroll 8
    for (int dw = 0; dw < KWT; ++dw) {
      const int t = (int)dh * KWT + dw;
      const float* gr = (valid[e] >> t) & 1 ? g + (base[e] - dh * OW - dw) * O + j0 : zero;
      if (gr != zero && gr + NV * VL > gend) {    // the last pixel: no next one to read into
        std::copy(gr, gend, tail);
        std::fill(tail + (gend - gr), tail + NV * VL, 0.f);
        gr = tail;
      }
#pragma GCC unroll 4
      for (int q = 0; q < NV; ++q) acc[dw][q] = acc[dw][q] + v * vload(gr + q * VL);
    }
  }
#pragma GCC unroll 8
  for (int dw = 0; dw < KWT; ++dw)
#pragma GCC unroll 4
    for (int q = 0; q < NV; ++q) vstore(gw + (dh * KWT + dw) * C * OP + j0 + q * VL, acc[dw][q]);
}

torch::Tensor csr_conv2d_grad_weight(torch::Tensor ptr, torch::Tensor idx, torch::Tensor val,
                                     torch::Tensor gout, int64_t C, int64_t H, int64_t W,
                                     int64_t KH, int64_t KW, int64_t ph, int64_t pw) {
  const int64_t P = gout.size(0), O = gout.size(1), OH = gout.size(2), OW = gout.size(3);
  const int64_t OP = padded(O), per = KH * KW * C * OP;
  TORCH_CHECK(ptr.size(0) == P * H + 1 && KH == 3 && KW == 3);
  auto gc = gout.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t* p = ptr.data_ptr<int64_t>();
  const int32_t* ip = idx.data_ptr<int32_t>();
  const float* vp = val.data_ptr<float>();
  const float* g = gc.data_ptr<float>();
  const float* gend = g + gc.numel();
  const int64_t nt = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), P));
  auto parts = torch::zeros({nt, KH, KW, C, OP}, gout.options());
  float* parts_p = parts.data_ptr<float>();
  at::parallel_for(0, nt, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> zero(4 * VL, 0.f), tail(4 * VL, 0.f);
    std::vector<int64_t> start(C + 1), next(C), base;
    std::vector<uint16_t> valid;
    std::vector<float> vals;
    for (int64_t t = t0; t < t1; ++t) {
      float* gw = parts_p + t * per;
      const int64_t ia = P * t / nt, ie = P * (t + 1) / nt;
      for (int64_t i = ia; i < ie; ++i) {
        const int64_t r0 = i * H, r1 = r0 + H, n = p[r1] - p[r0];
        std::fill(start.begin(), start.end(), 0);
        for (int64_t c = p[r0]; c < p[r1]; ++c) start[(ip[c] & 0xffff) + 1]++;
        for (int64_t c = 0; c < C; ++c) start[c + 1] += start[c];
        std::copy(start.begin(), start.end() - 1, next.begin());
        base.resize(n); valid.resize(n); vals.resize(n);
        for (int64_t h = 0; h < H; ++h) {
          const int64_t r = r0 + h;
          for (int64_t c = p[r]; c < p[r + 1]; ++c) {
            const int64_t x = ip[c] >> 16, d = next[ip[c] & 0xffff]++;
            uint16_t m = 0;
            for (int64_t dh = 0; dh < KH; ++dh)
              for (int64_t dw = 0; dw < KW; ++dw) {
                const int64_t y = h - dh + ph, xo = x - dw + pw;
                m |= (uint16_t)((y >= 0 && y < OH && xo >= 0 && xo < OW) << (dh * KW + dw));
              }
            base[d] = (i * OH + h + ph) * OW + x + pw;     // the output tap (0, 0) would read
            valid[d] = m; vals[d] = vp[c];
          }
        }
        for (int64_t c = 0; c < C; ++c) {
          const int64_t b0 = start[c], cnt = start[c + 1] - b0;
          if (cnt == 0) continue;
          float* gwc = gw + c * OP;
          for (int64_t j0 = 0; j0 < OP; j0 += 4 * VL) {
            const int64_t nv = std::min<int64_t>(4, (OP - j0) / VL);
            for (int64_t dh = 0; dh < KH; ++dh) {
#define DPAP_GW(NVV) conv_grad_weight_channel<3, NVV>(gwc, base.data() + b0, valid.data() + b0, \
    vals.data() + b0, cnt, g, zero.data(), gend, tail.data(), O, OW, C, OP, j0, dh)
              if (nv == 4) DPAP_GW(4); else if (nv == 3) DPAP_GW(3);
              else if (nv == 2) DPAP_GW(2); else DPAP_GW(1);
#undef DPAP_GW
            }
          }
        }
      }
    }
  });
  return parts.sum(0);
}
#pragma GCC pop_options

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("leaky_forward", &leaky_forward, "fused Leaky window, forward");
  m.def("leaky_backward", &leaky_backward, "fused Leaky window, backward");
  m.def("leaky_backward_coded", &leaky_backward_coded, "fused Leaky window, backward from the byte code");
  m.def("leaky_pool_forward", &leaky_pool_forward, "fused Leaky window and its 2x2 average pool");
  m.def("leaky_pool_backward_coded", &leaky_pool_backward_coded, "its gradient, from the byte code");
  m.def("avg_pool2x2_forward_4d", &avg_pool2x2_forward_4d, "2x2 average pool, either layout");
  m.def("avg_pool2x2_backward_4d", &avg_pool2x2_backward_4d, "its gradient, either layout");
  m.def("nonzeros", &nonzeros, "CSR of a matrix's nonzeros, or nothing when it is too dense");
  m.def("csr_matmul", &csr_matmul, "sparse (CSR) times dense");
  m.def("csr_transpose", &csr_transpose, "CSR of the transpose");
  m.def("csr_conv2d", &csr_conv2d, "2-D convolution of a mostly-zero channels-last input");
  m.def("csr_conv2d_grad_weight", &csr_conv2d_grad_weight, "its weight gradient");
}
"""

_lock = threading.Lock()
_module = None
error: str | None = None


def _ninja_on_path() -> None:
    """torch's extension builder runs ``ninja`` from PATH; the ``ninja`` wheel of the
    requirements puts it in the environment's bin folder, which may not be on PATH."""
    try:
        import ninja
        path = os.environ.get("PATH", "")
        if ninja.BIN_DIR not in path.split(os.pathsep):
            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + path
    except ImportError:
        pass


def _build():
    """Compile with OpenMP (torch's runtime, see for_chunks), or without it where the compiler
    has no OpenMP support."""
    from torch.utils.cpp_extension import load_inline
    flags = ["-O3", "-march=native", "-ffp-contract=off"]
    try:
        return load_inline(name="dpap_deploy_leaky_v29_omp", cpp_sources=[_SOURCE], functions=None,
                           extra_cflags=flags + ["-fopenmp"], extra_ldflags=["-fopenmp"],
                           verbose=False)
    except Exception:  # noqa: BLE001 - no OpenMP here: plain threads
        return load_inline(name="dpap_deploy_leaky_v29", cpp_sources=[_SOURCE], functions=None,
                           extra_cflags=flags, verbose=False)


def kernel():
    """The compiled module, or ``None`` (disabled, or the build failed: see ``error``)."""
    global _module, error
    if os.environ.get("DPAP_DEPLOY_NATIVE", "1") == "0":
        return None
    if _module is not None or error is not None:
        return _module
    with _lock:
        if _module is None and error is None:
            try:
                _ninja_on_path()
                _module = _build()
            except Exception as exc:  # noqa: BLE001 - any build failure means the torch path
                error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else ''}"
    return _module
