"""A whole time window of one ``snn.Leaky`` population in one autograd operation.

Forward, for ``t = 0 .. T-1`` with ``U[-1] = 0`` (snnTorch 1.0's arithmetic, operation by
operation, so the spikes are bit-identical to its step loop):

    R[t]  = H(U[t-1] - V_th) = S[t-1] / g            (detached, snnTorch's ``mem_reset``)
    zero:      U[t] = beta * ((1 - R[t]) * U[t-1]) + I[t]
    subtract:  U[t] = (beta * U[t-1] + I[t]) - R[t] * V_th
    none:      U[t] = beta * U[t-1] + I[t]
    S[t]  = spike_grad(U[t] - V_th) * g               (g: graded_spikes_factor)

with ``beta`` clamped to [0, 1]. The forward loop runs without autograd, writes into
preallocated ``[T, ...]`` buffers (four element-wise operations a step) and saves ``U`` and the
spikes. ``(1 - R) U`` is computed as ``where(R, 0, U)``: equal, but for the sign of a zero.
Backward is one reverse pass (backpropagation through time):

    dL/dU[t] = dL/dS[t] g spike_grad'(U[t] - V_th) + dL/dU[t+1] * dU[t+1]/dU[t]
    dU[t+1]/dU[t] = beta (1 - R[t+1])  (zero)   or   beta  (subtract, none)
    dL/dI[t] = dL/dU[t];   dL/dbeta = sum_t dL/dU[t] * U'[t-1] (inside [0, 1]);
    dL/dV_th = sum_t (-dL/dS[t] g spike_grad'(.) - dL/dU[t] R[t] [subtract])

The surrogate derivative ``spike_grad'`` is the model's own: ``spike_grad`` is called once on
all ``T`` steps under autograd and differentiated, so any snnTorch surrogate works. A static
input current ``I`` (``[B, ...]``, the same at every step: direct encoding) is not expanded;
its gradient is the sum over steps.
"""
from __future__ import annotations

import torch

RESETS = {"subtract": 0, "zero": 1, "none": 2}
# The compiled forward keeps one byte per neuron and step for the common backward case (the
# rectangle surrogate, beta and threshold not learned) instead of U; False keeps U and takes
# the general backward loop (tests: the two give bit-identical gradients).
CODED = True


def _native(current, beta, threshold, graded, build: bool):
    """The compiled kernel when it covers this case (``native.py``; built now only if ``build``:
    a training step), else ``None``: the torch path, also CUDA's."""
    if current.device.type != "cpu" or current.dtype != torch.float32 or beta.numel() != 1 \
            or threshold.numel() != 1 or not bool(graded.eq(1).all()):
        return None
    from . import native
    return native.kernel(build)


class LeakyWindow(torch.autograd.Function):
    @staticmethod
    def forward(ctx, current, beta, threshold, graded, spike_grad, reset, steps):
        static = steps is not None
        T = steps if static else current.shape[0]
        shape = tuple(current.shape if static else current.shape[1:])
        ctx.spike_grad, ctx.reset, ctx.static, ctx.shape = spike_grad, reset, static, shape
        k = _native(current, beta, threshold, graded, any(ctx.needs_input_grad[:3]))
        ctx.native = k is not None
        if k is not None:
            b = float(beta.clamp(0, 1))
            width = _rectangle_width(spike_grad)
            # what the backward pass needs: nothing, one byte per neuron and step (spike, and
            # inside the rectangle's window), or the membrane U (csrc/leaky.cpp, leaky_forward)
            if not any(ctx.needs_input_grad[:3]):
                save = 0
            elif CODED and width and not ctx.needs_input_grad[1] and not ctx.needs_input_grad[2]:
                save = 1
            else:
                save = 2
            # a channels-last map runs in its memory order: the kernel is element-wise per step
            perm = _memory_order(current, static)
            flat = current.permute(perm) if perm else current
            S, saved = k.leaky_forward(flat.reshape(-1) if static else flat.reshape(T, -1),
                                       T, b, float(threshold), reset, static, save,
                                       float(width or 0.0))
            ctx.save, ctx.perm = save, perm
            if save == 2:
                ctx.save_for_backward(saved, S, beta, threshold, graded)
            else:
                ctx.save_for_backward(saved, beta)
            return _from_memory_order(S, T, flat.shape, perm, static)
        b = beta.clamp(0, 1)
        U = torch.empty((T,) + shape, dtype=current.dtype, device=current.device)
        fired = torch.empty((T,) + shape, dtype=torch.bool, device=current.device)
        mem = torch.zeros(shape, dtype=current.dtype, device=current.device)
        thr = threshold
        for t in range(T):
            cur = current if static else current[t]
            if t > 0 and reset == 1:      # (1 - R) U: R = H(U[t-1] - V_th) is last step's spike
                mem = torch.where(fired[t - 1], 0.0, mem)
            torch.mul(b, mem, out=U[t])
            U[t].add_(cur)
            if t > 0 and reset == 0:
                U[t].sub_(fired[t - 1] * thr)
            mem = U[t]
            torch.gt(mem, thr, out=fired[t])
        ctx.save_for_backward(U, fired, beta, threshold, graded)
        spikes = fired.to(current.dtype)
        return spikes if bool(graded.eq(1).all()) else spikes * graded

    @staticmethod
    def backward(ctx, grad_spikes):
        if ctx.native:
            return _native_backward(ctx, grad_spikes)
        U, fired, beta, threshold, graded = ctx.saved_tensors
        spike_grad, reset, static = ctx.spike_grad, ctx.reset, ctx.static
        T = U.shape[0]
        direct = surrogate_grad(spike_grad, U, threshold, grad_spikes * graded)
        b = beta.clamp(0, 1)
        g_mem = torch.empty_like(U)
        acc = None
        for t in range(T - 1, -1, -1):
            if acc is None:
                acc = direct[t].clone()
            else:
                if reset == 1:            # dU[t+1]/dU[t] = beta (1 - R[t+1]), R[t+1] = fired[t]
                    acc = torch.where(fired[t], 0.0, acc)
                acc = acc.mul_(b) if acc.shape == direct[t].shape else acc * b
                acc.add_(direct[t])
            g_mem[t] = acc
        g_current = g_mem.sum(0) if static else g_mem
        g_beta = g_thr = None
        if ctx.needs_input_grad[1]:
            prev = torch.cat([torch.zeros_like(U[:1]), U[:-1]])             # U[t-1]
            if reset == 1:
                prev = prev.masked_fill(torch.cat([torch.zeros_like(fired[:1]), fired[:-1]]), 0)
            g = (g_mem * prev) * ((beta >= 0) & (beta <= 1)).to(U.dtype)
            g_beta = _reduce_to(g, beta)
        if ctx.needs_input_grad[2]:
            g = -direct
            if reset == 0:
                g = g - g_mem * torch.cat([torch.zeros_like(fired[:1]), fired[:-1]]).to(U.dtype)
            g_thr = _reduce_to(g, threshold)
        return g_current, g_beta, g_thr, None, None, None, None


def _native_backward(ctx, grad_spikes):
    from . import native
    if ctx.save == 1:
        code, beta = ctx.saved_tensors
        T = code.shape[0]
        G = native.kernel().leaky_backward_coded(
            _to_memory_order(grad_spikes, ctx.perm, ctx.static).reshape(T, -1), code,
            float(beta.clamp(0, 1)), ctx.reset, ctx.static, _rectangle_width(ctx.spike_grad))
        return _current_grad(G, ctx, T), None, None, None, None, None, None
    U, S, beta, threshold, graded = ctx.saved_tensors
    T = U.shape[0]
    g = _to_memory_order(grad_spikes, ctx.perm, ctx.static).reshape(T, -1)
    width = _rectangle_width(ctx.spike_grad)
    direct = torch.empty(0) if width else \
        surrogate_grad(ctx.spike_grad, U, threshold, g).contiguous()
    G, gb, gt = native.kernel().leaky_backward(
        g, U, S, direct, float(beta.clamp(0, 1)), float(threshold), ctx.reset, ctx.static,
        float(width or 0.0), ctx.needs_input_grad[1], ctx.needs_input_grad[2])
    g_current = _current_grad(G, ctx, T)
    g_beta = g_thr = None
    if ctx.needs_input_grad[1]:
        inside = bool((beta >= 0) & (beta <= 1))
        g_beta = (gb if inside else torch.zeros_like(gb)).to(beta.dtype).reshape(beta.shape)
    if ctx.needs_input_grad[2]:
        g_thr = gt.to(threshold.dtype).reshape(threshold.shape)
    return g_current, g_beta, g_thr, None, None, None, None


def _memory_order(t: torch.Tensor, static: bool) -> list[int] | None:
    """The order of ``t``'s dimensions in memory when ``t`` is dense but not contiguous (a
    channels-last map: ``[T, B, C, H, W]`` stored as ``[T, B, H, W, C]``), time first for a
    sequence; ``None`` when ``t`` is contiguous or has no such order (then it is copied)."""
    if t.is_contiguous():
        return None
    perm = sorted(range(t.dim()), key=lambda d: -t.stride(d))
    if (not static and perm[0] != 0) or not t.permute(perm).is_contiguous():
        return None
    return perm


def _spike_perm(perm: list[int], static: bool) -> list[int]:
    """The memory order of the spikes ``[T, ...]`` made from a current in order ``perm``."""
    return [0] + [p + 1 for p in perm] if static else perm


def _inverse(perm: list[int]) -> list[int]:
    return sorted(range(len(perm)), key=perm.__getitem__)


def _from_memory_order(S: torch.Tensor, T: int, flat_shape, perm, static: bool) -> torch.Tensor:
    """The kernel's ``[T, N]`` spikes as ``[T, B, ...]`` with the current's memory layout."""
    S = S.view((T,) + tuple(flat_shape if static else flat_shape[1:]))
    return S.permute(_inverse(_spike_perm(perm, static))) if perm else S


def _to_memory_order(g: torch.Tensor, perm, static: bool) -> torch.Tensor:
    return g.permute(_spike_perm(perm, static)) if perm else g


def _current_grad(G: torch.Tensor, ctx, T: int) -> torch.Tensor:
    """The kernel's gradient (``[N]`` or ``[T, N]``, memory order) in the current's shape."""
    if ctx.perm is None:
        return G.reshape(ctx.shape) if ctx.static else G.reshape((T,) + ctx.shape)
    logical = ctx.shape if ctx.static else (T,) + ctx.shape
    phys = [logical[d] for d in ctx.perm]
    return G.view(phys).permute(_inverse(ctx.perm))


def _rectangle_width(spike_grad) -> float | None:
    width = getattr(spike_grad, "width", None)
    if width is not None and getattr(spike_grad, "__name__", "").startswith("rectangle"):
        return float(width)
    return None


def surrogate_grad(spike_grad, U: torch.Tensor, threshold: torch.Tensor,
                   grad: torch.Tensor) -> torch.Tensor:
    """``grad * spike_grad'(U - V_th)`` for every step at once: closed form for the rectangle
    of ``dpap_deploy.neurons`` (``|x| < a/2 -> 1/a``), else by differentiating the model's own
    ``spike_grad`` under autograd (any snnTorch surrogate)."""
    width = _rectangle_width(spike_grad)
    if width is not None:
        inside = (U - threshold).abs_().lt_(width / 2)          # 0./1. in U's dtype
        return inside.mul_(grad).div_(width)
    with torch.enable_grad():
        shifted = (U - threshold).detach().requires_grad_(True)
        (out,) = torch.autograd.grad(spike_grad(shifted), shifted, grad)
    return out


def _reduce_to(g: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Sum a ``[T, B, ...]`` gradient down to the shape of a broadcast parameter."""
    g = g.sum(0)
    while g.dim() > like.dim():
        g = g.sum(0)
    for i, n in enumerate(like.shape):
        if n == 1 and g.shape[i] != 1:
            g = g.sum(i, keepdim=True)
    return g.reshape(like.shape)


def leaky_window(neuron, current: torch.Tensor, steps: int | None = None) -> torch.Tensor:
    """Spikes ``[T, B, ...]`` of ``snn.Leaky`` ``neuron`` over a window; ``current`` is
    ``[T, B, ...]``, or ``[B, ...]`` repeated for ``steps`` steps."""
    reset = RESETS[neuron.reset_mechanism]
    beta = neuron.beta if isinstance(neuron.beta, torch.Tensor) else torch.tensor(float(neuron.beta))
    thr = neuron.threshold
    graded = neuron.graded_spikes_factor
    return LeakyWindow.apply(current, beta.to(current.dtype), thr.to(current.dtype),
                             graded.to(current.dtype), neuron.spike_grad, reset, steps)


def fusable(neuron) -> bool:
    """``snn.Leaky`` with the options this function reproduces exactly, and a surrogate whose
    forward is the Heaviside step ``x > 0`` (every snnTorch surrogate's is; checked)."""
    import snntorch as snn
    return (type(neuron) is snn.Leaky and neuron.reset_delay and not neuron.inhibition
            and not neuron.state_quant and neuron.reset_mechanism in RESETS
            and _heaviside_forward(neuron.spike_grad))


def _heaviside_forward(spike_grad) -> bool:
    probe = torch.tensor([-1.0, -1e-30, -0.0, 0.0, 1e-30, 0.5, 3.0])
    with torch.no_grad():
        try:
            out = spike_grad(probe)
        except Exception:  # noqa: BLE001 - a surrogate we cannot probe is not fused
            return False
    return isinstance(out, torch.Tensor) and torch.equal(out.float(), (probe > 0).float())
