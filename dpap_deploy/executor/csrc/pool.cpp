// 2x2 average pooling of spike maps, either layout, one pass each way (pool.py).
#include "common.h"

// 2x2 average pooling, stride 2, no padding, floor: ((x00 + x01) + x10) + x11, times 0.25
// (aten's order; a division by 4 rounds the same), of [P, C, H, W] maps of either layout,
// contiguous or channels-last (what a convolution on a channels-last input makes), with the
// output in the layout asked for: a pool between two layouts converts on the way instead of a
// separate copy. The loops run along the input's (forward) or the gradient's (backward) memory
// order, vectorised over W or over C. The gradient: dL/dy * 0.25 into each of the window's
// four inputs (odd edges: zero).
at::Tensor avg_pool2x2_forward_4d(at::Tensor x, bool in_cl, bool out_cl) {
  const int64_t P = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t h = H / 2, w = W / 2;
  auto xc = x.contiguous(in_cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  auto out = at::empty({P, C, h, w}, xc.options().memory_format(
      out_cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
  const float* in = xc.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int64_t op = out.stride(0), oc = out.stride(1), oi = out.stride(2), oj = out.stride(3);
  if (!in_cl) {
    for_chunks(P * C, [&](int64_t r0, int64_t r1, int) DPAP_CLONES {
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
    for_chunks(P * h, [&](int64_t r0, int64_t r1, int) DPAP_CLONES {
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
at::Tensor avg_pool2x2_backward_4d(at::Tensor g, int64_t H, int64_t W, bool in_cl) {
  const int64_t P = g.size(0), C = g.size(1), h = g.size(2), w = g.size(3);
  auto fmt = in_cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  auto opts = g.options().memory_format(fmt);
  auto out = at::empty({P, C, H, W}, opts);   // (at::zeros ignores the memory format)
  if (2 * h != H || 2 * w != W) out.zero_();
  const float* gi = g.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int64_t gp = g.stride(0), gc = g.stride(1), gy = g.stride(2), gx = g.stride(3);
  if (!in_cl) {
    for_chunks(P * C, [&](int64_t r0, int64_t r1, int) DPAP_CLONES {
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
    for_chunks(P * h, [&](int64_t r0, int64_t r1, int) DPAP_CLONES {
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
