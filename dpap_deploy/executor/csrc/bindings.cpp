// The Python module of the kernels in leaky.cpp, leaky_pool.cpp and pool.cpp (loaded by native.py).
#include <torch/extension.h>
#include <vector>

std::vector<at::Tensor> leaky_forward(at::Tensor current, int64_t T, double beta_d, double thr_d,
                                      int64_t reset, bool is_static, int64_t save, double width);
at::Tensor leaky_backward_coded(at::Tensor grad_s, at::Tensor code, double beta_d, int64_t reset,
                                bool is_static, double width);
std::vector<at::Tensor> leaky_backward(at::Tensor grad_s, at::Tensor U, at::Tensor S,
                                       at::Tensor direct, double beta_d, double thr_d,
                                       int64_t reset, bool is_static, double width,
                                       bool need_beta, bool need_thr);
std::vector<at::Tensor> leaky_pool_forward(at::Tensor current, int64_t T, double beta_d,
                                           double thr_d, int64_t reset, bool is_static,
                                           int64_t save, double width, int64_t B, int64_t C,
                                           int64_t H, int64_t W, bool in_cl, bool out_cl,
                                           bool spikes);
at::Tensor leaky_pool_backward_coded(at::Tensor grad_pooled, at::Tensor code, double beta_d,
                                     int64_t reset, bool is_static, double width, int64_t B,
                                     int64_t C, int64_t H, int64_t W, bool in_cl);
at::Tensor avg_pool2x2_forward_4d(at::Tensor x, bool in_cl, bool out_cl);
at::Tensor avg_pool2x2_backward_4d(at::Tensor g, int64_t H, int64_t W, bool in_cl);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("leaky_forward", &leaky_forward, "fused Leaky window, forward");
  m.def("leaky_backward", &leaky_backward, "fused Leaky window, backward");
  m.def("leaky_backward_coded", &leaky_backward_coded, "fused Leaky window, backward from the byte code");
  m.def("leaky_pool_forward", &leaky_pool_forward, "fused Leaky window and its 2x2 average pool");
  m.def("leaky_pool_backward_coded", &leaky_pool_backward_coded, "its gradient, from the byte code");
  m.def("avg_pool2x2_forward_4d", &avg_pool2x2_forward_4d, "2x2 average pool, either layout");
  m.def("avg_pool2x2_backward_4d", &avg_pool2x2_backward_4d, "its gradient, either layout");
}
