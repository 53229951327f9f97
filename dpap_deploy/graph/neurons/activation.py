"""ANN activations (element-wise, stateless): what DPAP reads is the activation itself."""
from __future__ import annotations

from torch import nn

from . import NeuronAdapter, register

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
               nn.Hardtanh, nn.Softplus, nn.Mish, nn.Hardswish)


@register
class Activation(NeuronAdapter):
    types = ACTIVATIONS
    kind = "ann"
    label = "element-wise activations (ReLU, GELU, ...; ANN)"
