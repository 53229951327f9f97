"""Multi-step execution: a whole time window per layer (``multistep.py``), with ``snn.Leaky``
populations fused into one autograd operation each (``lif.py``; compiled from ``csrc/`` on
the first training step that needs it, ``native.py``). Running a graph over a window, with
either executor: ``run.py``."""
from .lif import LeakyWindow, fusable, leaky_window
from .multistep import MultiStep

__all__ = ["MultiStep", "LeakyWindow", "fusable", "leaky_window"]
