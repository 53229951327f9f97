"""Plasticity rules: the synaptic measure that feeds the spine importance (method.md, Eq 7).

One file per rule, each a :class:`PlasticityRule` subclass decorated with :func:`register`;
``RULES`` (name -> rule) is the table ``DPAPConfig(rule=...)`` and ``--rule`` read. A rule
gives, per batch, one value per synapse ``[C_out, C_in]`` from the layer's end-of-window
traces (``measure``), and may accumulate something at every time step of the batch
(``on_step``, e.g. STDP's timing). Adding a rule is one file, here or in your own code::

    @register
    class MyRule(PlasticityRule):
        name = "mine"
        def measure(self, rec, theta):
            return rec.s_post.T @ rec.s_pre
"""
from .base import RULES, PlasticityRule, register, rule
from . import bcm, hebb, stdp  # noqa: F401  (the rules that come with the package)

__all__ = ["RULES", "PlasticityRule", "register", "rule"]
