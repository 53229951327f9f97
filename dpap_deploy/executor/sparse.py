"""Synapses fed by spikes: only the nonzero inputs' products.

A spiking layer's input is mostly zeros (snn-mnist's first fully connected layer reads about 1%
nonzero pooled spikes at initialisation, 8-10% once trained; its second convolution 8% and
10-12%). A dense product multiplies every zero. Here, on CPU in float32:
- a fully connected layer (2-D input, a product of at least ``MIN_MACS`` multiply-adds, at
  most ``MAX_DENSITY`` nonzeros): the forward product and the weight gradient over the
  nonzeros (``native.py``: ``nonzeros``, ``csr_matmul``, ``csr_transpose``); the input
  gradient stays a dense product (the gradient is not sparse);
- a 2-D convolution on the executor's channels-last path (stride 1, one group, zero padding,
  at least ``MIN_MACS``, at most ``MAX_CONV_DENSITY``): the forward (``csr_conv2d``) and, for
  3x3 kernels, the weight gradient (``csr_conv2d_grad_weight``); the input gradient stays
  oneDNN's.
Anything else runs the layer as written.

Same numbers as the dense product, not just close. MKL's sgemm sums each output's terms in runs
of ``kc`` consecutive inputs, one fused multiply-add per term from zero, and adds each run's sum
to the output (which starts as the bias); oneDNN's direct convolution sums in (kh, kw, c) order
from zero and adds the bias last, and its weight gradient sums the images in order, one range
per thread. The kernels follow those orders, skipping the zero terms, which add exactly nothing
(for finite weights: a dense product turns an infinite weight times a zero input into NaN), so
they reproduce the dense results bit for bit. The orders are not documented and differ between
machines and builds, so ``block_depth`` and ``conv_exact`` find or check them once per layer
shape by computing a small product both ways (MKL's sgemm on this machine's AVX-512 cores:
``kc`` = 192). Where no order reproduces it (another BLAS, MKL's kernel for a narrow layer such
as a 10-way output, oneDNN's blocked weight gradient for 16-channel inputs) that product stays
dense: the executor promises the step loop's spikes, not spikes close to them. The products'
backward passes are not differentiable again (``create_graph`` raises).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

SPARSE = True          # False: every synapse dense (A/B, tests)
# ... where the input has at most this fraction of nonzeros: measured on snn-mnist's first
# fully connected layer ([800, 1960] x [1960, 300], 2 threads), the sparse forward and weight
# gradient together took 3.6 ms at 1% nonzeros, 7.4 ms at 10%, 11.3 ms at 20% and 14.7 ms at
# 30%, against the dense pair's 11.8-12.7 ms
MAX_DENSITY = 0.2
# ... and a dense product of at least this many multiply-adds: below it the dense product takes
# a few hundred microseconds at most, and the sparse path's fixed costs (the nonzeros' pass,
# padding, the autograd function) ate its gain: measured, snn-digits' [512, 128] x [128, 128]
# layer made its inference 0.86x as fast
MIN_MACS = 1 << 25
# run lengths tried, for K inputs; MKL's sgemm here: runs of 192, or two halves when 192 < K <= 384
_CANDIDATES = lambda K: (192, -(-K // 2), K // 2, 128, 256, 64, 96, 320, 384, 512, K)  # noqa: E731
_depths: dict[tuple[int, int, bool], tuple[int, bool]] = {}


def _kernel():
    from . import native
    return native.kernel()


def _padded_columns(m: torch.Tensor) -> torch.Tensor:
    """``m`` ([R, N], or a vector [N]) with its columns zero-padded to a multiple of 16."""
    n = m.shape[-1]
    out = m.new_zeros(m.shape[:-1] + ((n + 15) // 16 * 16,))
    out[..., :n] = m
    return out


def _matmul(k, csr, b: torch.Tensor, bias, kc: int) -> torch.Tensor:
    none = b.new_empty(0)
    return k.csr_matmul(*csr, _padded_columns(b), none if bias is None else _padded_columns(bias),
                        b.shape[1], kc)


def block_depth(K: int, N: int, bias: bool) -> tuple[int, bool]:
    """``(kc, exact)``: the run length that reproduces ``F.linear``'s bits for inputs of ``K``
    features and ``N`` outputs, tried on a small product once per shape, and whether one did
    (when none does: ``K``, one run, and results equal to float32 rounding)."""
    key = (K, N, bias)
    if key not in _depths:
        k = _kernel()
        g = torch.Generator().manual_seed(0)
        rows = 256      # a batch-sized product: the BLAS may pick its kernel by size
        x = (torch.rand(rows, K, generator=g) < 0.3).float() * \
            torch.randint(1, 5, (rows, K), generator=g) * 0.25
        w = torch.randn(N, K, generator=g) * K ** -0.5
        b = torch.randn(N, generator=g) if bias else None
        dense = torch.nn.functional.linear(x, w, b)
        csr = k.nonzeros(x, 1.0, 0)
        kc = next((kc for kc in _CANDIDATES(K) if 0 < kc <= K and torch.equal(
            _matmul(k, csr, w.t(), b, kc), dense)), None)
        _depths[key] = (K, False) if kc is None else (kc, True)
    return _depths[key]


class SparseLinear(torch.autograd.Function):
    """``F.linear(x, weight, bias)`` for an ``x`` given also as the CSR of its nonzeros."""

    @staticmethod
    def forward(ctx, x, weight, bias, csr, kc):
        k = _kernel()
        ctx.save_for_backward(weight, *csr)
        ctx.kc, ctx.K, ctx.has_bias = kc, x.shape[1], bias is not None
        return _matmul(k, csr, weight.detach().t(), None if bias is None else bias.detach(), kc)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        weight, *csr = ctx.saved_tensors
        grad = grad.contiguous()
        gx = grad.mm(weight) if ctx.needs_input_grad[0] else None
        gw = gb = None
        if ctx.needs_input_grad[1]:      # X^T G over X's nonzeros, as [K, N]
            k = _kernel()
            gw = _matmul(k, k.csr_transpose(*csr, ctx.K), grad, None, ctx.kc).t().contiguous()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = grad.sum(0)
        return gx, gw, gb, None, None


def hooks_allow(m: nn.Module, observer=None) -> bool:
    """Whether running ``m`` without calling it skips nothing: it has no hooks, or only the
    observer's, which stand aside during a multi-step run (``DPAP.hooks_standing_aside``)."""
    from torch.nn.modules import module as tm
    if tm._global_forward_hooks or tm._global_forward_pre_hooks or tm._global_backward_hooks \
            or getattr(tm, "_global_backward_pre_hooks", None) or m._backward_hooks \
            or getattr(m, "_backward_pre_hooks", None):
        return False
    ids = set(m._forward_pre_hooks) | set(m._forward_hooks)
    if not ids:
        return True
    aside = getattr(observer, "hooks_standing_aside", None)
    return aside is not None and ids <= aside()


def linear(m: nn.Linear, x: torch.Tensor):
    """``m(x)`` over ``x``'s nonzeros where that is covered and pays, else ``None``."""
    w = m.weight
    if not SPARSE or x.dim() != 2 or x.device.type != "cpu" or x.dtype != torch.float32 \
            or w.dtype != torch.float32 or x.numel() * w.shape[0] < MIN_MACS \
            or torch.is_autocast_enabled("cpu"):
        return None
    k = _kernel()
    if k is None:
        return None
    kc, exact = block_depth(x.shape[1], w.shape[0], m.bias is not None)
    if not exact:       # the step loop's spikes are promised, not spikes close to them
        return None
    csr = k.nonzeros(x.detach().contiguous(), MAX_DENSITY, 0)
    if not csr:
        return None
    return SparseLinear.apply(x, w, m.bias, tuple(csr), kc)


# --------------------------------------------------------------------------- convolutions
# A 2-D convolution (stride 1, one group, zero padding) over its channels-last input's
# nonzeros: the forward (``csr_conv2d``) and, for 3x3 kernels, the weight gradient
# (``csr_conv2d_grad_weight``); the input gradient stays oneDNN's. Measured on snn-mnist's
# second convolution ([800, 15, 14, 14] -> 40 maps, 3x3, 2 threads; forward including the
# nonzeros' pass): forward 3.4 / 5.6 / 6.7 / 10.6 ms at 2 / 8 / 12 / 25% nonzeros against
# oneDNN's 10.5-10.9 ms, weight gradient 2.8 / 5.1 / 6.7 / 10.8 ms against 9.2-9.6 ms.
MAX_CONV_DENSITY = 0.15
_conv_exact: dict[tuple, tuple[bool, bool]] = {}


def conv_covered(m: nn.Module) -> bool:
    """A convolution the sparse forward computes: 2-D, stride 1, no dilation, one group, zero
    padding smaller than the kernel."""
    return type(m) is nn.Conv2d and m.groups == 1 and tuple(m.stride) == (1, 1) \
        and tuple(m.dilation) == (1, 1) and m.padding_mode == "zeros" \
        and isinstance(m.padding, tuple) \
        and all(p < k for p, k in zip(m.padding, m.kernel_size)) and m.in_channels < (1 << 16)


def _rows(k, x: torch.Tensor, max_density: float):
    """The CSR of a channels-last map's ``[P * H, W * C]`` rows (idx: ``x << 16 | c``)."""
    P, C, H, W = x.shape
    return k.nonzeros(x.permute(0, 2, 3, 1).reshape(P * H, W * C), max_density, C)


def _conv(k, csr, shape, weight: torch.Tensor, bias, padding) -> torch.Tensor:
    P, _, H, W = shape
    wr = _padded_columns(weight.detach().permute(2, 3, 1, 0))      # [KH, KW, C, OP]
    b = weight.new_empty(0) if bias is None else bias.detach()
    return k.csr_conv2d(*csr, wr, b, P, H, W, weight.shape[0], padding[0], padding[1])


def conv_exact(m: nn.Conv2d) -> tuple[bool, bool]:
    """Whether the sparse forward, and the sparse weight gradient (3x3 kernels), give this
    convolution's bits here: oneDNN's direct convolution sums each output's terms in
    (kh, kw, c) order from zero, the bias last, and each weight gradient's over the images in
    order, one range of images per thread; the kernels follow those orders. Tried once per
    configuration on a small input."""
    key = (m.in_channels, m.out_channels, tuple(m.kernel_size), tuple(m.padding),
           m.bias is not None, torch.get_num_threads())
    if key not in _conv_exact:
        k = _kernel()
        g = torch.Generator().manual_seed(0)
        shape = (16, m.in_channels, 9, 10)
        x = ((torch.rand(shape, generator=g) < 0.3).float() *
             torch.randint(1, 5, shape, generator=g) * 0.25).contiguous(memory_format=torch.channels_last)
        w = torch.randn(m.weight.shape, generator=g) * m.weight[0].numel() ** -0.5
        b = torch.randn(m.out_channels, generator=g) if m.bias is not None else None
        dense = torch.nn.functional.conv2d(x, w, b, padding=m.padding)
        csr = _rows(k, x, 1.0)
        fwd = torch.equal(dense, _conv(k, csr, x.shape, w, b, m.padding))
        gw = tuple(m.kernel_size) == (3, 3)
        if gw:
            grad = torch.randn(dense.shape, generator=g).contiguous(memory_format=torch.channels_last)
            ref = torch.ops.aten.convolution_backward(
                grad, x, w, None, [1, 1], list(m.padding), [1, 1], False, [0, 0], 1,
                [False, True, False])[1]
            gw = torch.equal(ref, _conv_grad_weight(k, csr, x.shape, grad, m.padding))
        _conv_exact[key] = (fwd, gw)
    return _conv_exact[key]


def _conv_grad_weight(k, csr, shape, grad: torch.Tensor, padding) -> torch.Tensor:
    _, C, H, W = shape
    gwr = k.csr_conv2d_grad_weight(*csr, grad, C, H, W, 3, 3, padding[0], padding[1])
    return gwr[..., :grad.shape[1]].permute(3, 2, 0, 1).contiguous()


class SparseConv2d(torch.autograd.Function):
    """``F.conv2d(x, weight, bias, padding=padding)`` over ``x``'s nonzeros: the forward, and
    the weight gradient where ``sparse_grad`` (then the bias gradient is a plain sum over the
    batch); the input gradient, and otherwise all three, are the dense convolution's own
    (``convolution_backward``)."""

    @staticmethod
    def forward(ctx, x, weight, bias, csr, padding, sparse_grad):
        ctx.save_for_backward(x, weight, *csr)
        ctx.padding, ctx.has_bias, ctx.sparse_grad = list(padding), bias is not None, sparse_grad
        return _conv(_kernel(), csr, x.shape, weight, bias, padding)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight, *csr = ctx.saved_tensors
        need = ctx.needs_input_grad
        bias = ctx.has_bias and need[2]
        if not ctx.sparse_grad:
            gx, gw, gb = torch.ops.aten.convolution_backward(
                grad, x, weight, [weight.shape[0]] if ctx.has_bias else None, [1, 1],
                ctx.padding, [1, 1], False, [0, 0], 1, [need[0], need[1], bias])
            return gx, gw, gb, None, None, None
        # oneDNN computes the bias gradient in its weight-gradient pass: asked for alone it
        # costs that whole pass (snn-mnist's second convolution: 9.5 -> 19.8 ms with the input
        # gradient), so it is summed here (the same sum in another order: float rounding)
        gx = torch.ops.aten.convolution_backward(
            grad, x, weight, None, [1, 1], ctx.padding, [1, 1], False, [0, 0], 1,
            [True, False, False])[0] if need[0] else None
        gw = _conv_grad_weight(_kernel(), csr, x.shape, grad, ctx.padding) if need[1] else None
        gb = grad.sum((0, 2, 3)) if bias else None
        return gx, gw, gb, None, None, None


def conv2d(m: nn.Conv2d, x: torch.Tensor):
    """``m(x)`` for a channels-last ``x``, its forward over the nonzeros, where covered, exact
    here and sparse enough; else ``None``."""
    if not SPARSE or x.dim() != 4 or x.device.type != "cpu" or x.dtype != torch.float32 \
            or m.weight.dtype != torch.float32 \
            or x.numel() * m.kernel_size[0] * m.kernel_size[1] * m.out_channels < MIN_MACS \
            or not x.is_contiguous(memory_format=torch.channels_last) \
            or x.shape[3] >= (1 << 15) or torch.is_autocast_enabled("cpu") or not conv_covered(m):
        return None
    k = _kernel()
    if k is None:
        return None
    fwd, grad_w = conv_exact(m)
    if not fwd:
        return None
    csr = _rows(k, x.detach(), MAX_CONV_DENSITY)
    if not csr:
        return None
    return SparseConv2d.apply(x, m.weight, m.bias, tuple(csr), tuple(m.padding), grad_w)
