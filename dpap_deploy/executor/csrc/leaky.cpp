// The fused Leaky window of lif.py: forward, backward from the byte code, general backward.
#include "common.h"

template <int RESET, int SAVE>
DPAP_CLONES static void leaky_forward_tiles(const float* I, float* s, float* u, uint8_t* code, int64_t T,
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
std::vector<at::Tensor> leaky_forward(at::Tensor current, int64_t T, double beta_d,
                                         double thr_d, int64_t reset, bool is_static,
                                         int64_t save, double width) {
  auto cur = current.contiguous();
  const int64_t N = is_static ? cur.numel() : cur.numel() / T;
  auto S = at::empty({T, N}, cur.options());
  at::Tensor saved = save == 2 ? at::empty({T, N}, cur.options())
                      : save == 1 ? at::empty({T, N}, cur.options().dtype(at::kByte))
                                  : at::empty({0}, cur.options());
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

DPAP_CLONES static void coded_tiles(const float* gs, const uint8_t* cd, float* out, int64_t T,
                                    int64_t N, int64_t reset, bool is_static, float b,
                                    float inv_w, int64_t c0, int64_t c1) {
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
}

at::Tensor leaky_backward_coded(at::Tensor grad_s, at::Tensor code, double beta_d,
                                   int64_t reset, bool is_static, double width) {
  auto g = grad_s.contiguous();
  const int64_t T = code.size(0), N = code.size(1);
  auto G = is_static ? at::empty({N}, g.options()) : at::empty({T, N}, g.options());
  const float* gs = g.data_ptr<float>();
  const uint8_t* cd = code.data_ptr<uint8_t>();
  float* out = G.data_ptr<float>();
  const float b = (float)beta_d, inv_w = (float)(1.0 / width);
  for_chunks((N + TILE - 1) / TILE, [&](int64_t c0, int64_t c1, int) {
    coded_tiles(gs, cd, out, T, N, reset, is_static, b, inv_w, c0, c1);
  });
  return G;
}

// One thread's tiles [c0, c1) of leaky_backward; its sums for d beta and d threshold in *gb, *gt.
DPAP_CLONES static void backward_tiles(const float* gs, const float* u, const float* s,
                                       const float* d, float* out, int64_t T, int64_t N,
                                       int64_t reset, bool is_static, float b, float th,
                                       float half, float inv_w, bool need_beta, bool need_thr,
                                       int64_t c0, int64_t c1, double* gb_out, double* gt_out) {
  const bool have_direct = d != nullptr;
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
  *gb_out = gb;
  *gt_out = gt;
}

// Returns {grad of the current ([T, N] or [N]), sum for d beta, sum for d threshold}.
// direct: dL/dS * surrogate'(U - th), or empty when `width` > 0 (rectangle computed here).
std::vector<at::Tensor> leaky_backward(at::Tensor grad_s, at::Tensor U, at::Tensor S,
                                          at::Tensor direct, double beta_d, double thr_d,
                                          int64_t reset, bool is_static, double width,
                                          bool need_beta, bool need_thr) {
  auto g = grad_s.contiguous();
  const int64_t T = U.size(0), N = U.size(1);
  const bool have_direct = direct.numel() > 0;
  auto D = have_direct ? direct.contiguous() : direct;
  auto G = is_static ? at::empty({N}, U.options()) : at::empty({T, N}, U.options());
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
    backward_tiles(gs, u, s, d, out, T, N, reset, is_static, b, th, half, inv_w, need_beta,
                   need_thr, c0, c1, &gbs[slot], &gts[slot]);
  });
  double gb = 0.0, gt = 0.0;
  for (int c = 0; c < slots; ++c) { gb += gbs[c]; gt += gts[c]; }
  auto opts = at::TensorOptions().dtype(at::kDouble);
  return {G, at::full({}, gb, opts), at::full({}, gt, opts)};
}
