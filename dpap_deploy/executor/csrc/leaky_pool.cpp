// A Leaky window and its 2x2 average pool as one kernel each way (leaky_pool.py).
#include "common.h"

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
static DPAP_INLINE void pool_units(const float* fired, float* out, float* buf, const int64_t* rows,
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
static DPAP_INLINE void unpool_units(const float* gp, float* gs, float* buf, const int64_t* rows,
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

// Units [u0, u1) go in tiles [ua, ub) of at most per_tile() whole units: neurons [ua L, ub L),
// rows[k] the output row of unit ua + k at step 0 under strides st.
static inline void tile_rows(const PoolGeom& g, int64_t ua, int64_t ub, const int64_t* st,
                             int64_t* rows) {
  for (int64_t u = ua; u < ub; ++u) rows[u - ua] = g.row(u, 0, st);
}

template <int RESET, int SAVE>
DPAP_CLONES static void leaky_pool_forward_units(const float* I, float* s, uint8_t* code,
                                                 float* out, const PoolGeom& g, const int64_t* os,
                                                 int64_t T, int64_t N, float b, float th,
                                                 float half, bool is_static, int64_t u0,
                                                 int64_t u1) {
  const int64_t L = g.L(), per = g.per_tile();
  std::vector<float> mem(per * L), fired(per * L), buf(per * L / 2);
  std::vector<int64_t> rows(per);
  for (int64_t ua = u0; ua < u1; ua += per) {
    const int64_t ub = std::min(u1, ua + per), i0 = ua * L, n = (ub - ua) * L;
    tile_rows(g, ua, ub, os, rows.data());
    std::fill(mem.begin(), mem.begin() + n, 0.f);
    std::fill(fired.begin(), fired.begin() + n, 0.f);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t k0 = t * N + i0;
      leaky_step<RESET, SAVE>(is_static ? I + i0 : I + k0, mem.data(), fired.data(),
                              s ? s + k0 : nullptr, nullptr, SAVE == 1 ? code + k0 : nullptr,
                              n, b, th, half);
      pool_units(fired.data(), out, buf.data(), rows.data(), g, ua, ub, t, os);
    }
  }
}

DPAP_CLONES static void leaky_pool_backward_units(const float* gp, const uint8_t* cd, float* out,
                                                  const PoolGeom& g, const int64_t* gst,
                                                  int64_t T, int64_t N, int64_t reset,
                                                  bool is_static, float b, float inv_w,
                                                  int64_t u0, int64_t u1) {
  const int64_t L = g.L(), per = g.per_tile();
  std::vector<float> acc(per * L), sum(per * L), gs(per * L), buf(L / 4);
  std::vector<int64_t> rows(per);
  for (int64_t ua = u0; ua < u1; ua += per) {
    const int64_t ub = std::min(u1, ua + per), i0 = ua * L, n = (ub - ua) * L;
    tile_rows(g, ua, ub, gst, rows.data());
    std::fill(acc.begin(), acc.begin() + n, 0.f);
    std::fill(sum.begin(), sum.begin() + n, 0.f);
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t k0 = t * N + i0;
      unpool_units(gp, gs.data(), buf.data(), rows.data(), g, ua, ub, t, gst);
      coded_step(acc.data(), gs.data(), cd + k0, n, t < T - 1, reset, b, inv_w);
      store_grad(acc.data(), out + k0, sum.data(), n, is_static);
    }
    if (is_static) std::copy(sum.begin(), sum.begin() + n, out + i0);
  }
}

// Returns {pooled [T * B, C, H / 2, W / 2] (channels-last if out_cl), spikes [T, N] or empty,
// byte code [T, N] or empty}. save: 0 nothing, 1 the byte code (leaky_forward).
std::vector<at::Tensor> leaky_pool_forward(at::Tensor current, int64_t T, double beta_d,
                                              double thr_d, int64_t reset, bool is_static,
                                              int64_t save, double width, int64_t B, int64_t C,
                                              int64_t H, int64_t W, bool in_cl, bool out_cl,
                                              bool spikes) {
  auto cur = current.contiguous();
  const PoolGeom g{B, in_cl ? 1 : C, H, W, in_cl ? C : 1};
  const int64_t N = B * C * H * W;
  auto fmt = out_cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  auto out = at::empty({T * B, C, H / 2, W / 2}, cur.options().memory_format(fmt));
  auto S = spikes ? at::empty({T, N}, cur.options()) : at::empty({0}, cur.options());
  auto code = save == 1 ? at::empty({T, N}, cur.options().dtype(at::kByte))
                        : at::empty({0}, cur.options().dtype(at::kByte));
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
at::Tensor leaky_pool_backward_coded(at::Tensor grad_pooled, at::Tensor code,
                                        double beta_d, int64_t reset, bool is_static,
                                        double width, int64_t B, int64_t C, int64_t H, int64_t W,
                                        bool in_cl) {
  const int64_t T = code.size(0), N = code.size(1);
  const PoolGeom g{B, in_cl ? 1 : C, H, W, in_cl ? C : 1};
  auto G = is_static ? at::empty({N}, grad_pooled.options())
                     : at::empty({T, N}, grad_pooled.options());
  const int64_t gst[4] = {grad_pooled.stride(0), grad_pooled.stride(1), grad_pooled.stride(2),
                          grad_pooled.stride(3)};
  const float* gp = grad_pooled.data_ptr<float>();
  const uint8_t* cd = code.data_ptr<uint8_t>();
  float* out = G.data_ptr<float>();
  const float b = (float)beta_d, inv_w = (float)(1.0 / width);
  for_chunks(g.units(), [&](int64_t u0, int64_t u1, int) {
    leaky_pool_backward_units(gp, cd, out, g, gst, T, N, reset, is_static, b, inv_w, u0, u1);
  }, std::max<int64_t>(1, g.per_tile()));
  return G;
}
