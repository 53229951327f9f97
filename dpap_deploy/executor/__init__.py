"""Multi-step execution: a whole time window per layer (``multistep.py``), with ``snn.Leaky``
populations fused into one autograd operation each (``lif.py``)."""
from .allocator import tune_cpu_allocator
from .lif import LeakyWindow, fusable, leaky_window
from .multistep import MultiStep

__all__ = ["MultiStep", "tune_cpu_allocator", "LeakyWindow", "fusable", "leaky_window"]
