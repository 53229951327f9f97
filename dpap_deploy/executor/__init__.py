"""Multi-step execution: a whole time window per layer (``multistep.py``), with ``snn.Leaky``
populations fused into one autograd operation each (``lif.py``; compiled from ``csrc/`` on
the first training step that needs it, ``native.py``). ``tune_cpu_allocator``: for a program
that owns its process (``allocator.py``); nothing here calls it."""
from .allocator import tune_cpu_allocator
from .lif import LeakyWindow, fusable, leaky_window
from .multistep import MultiStep

__all__ = ["MultiStep", "tune_cpu_allocator", "LeakyWindow", "fusable", "leaky_window"]
