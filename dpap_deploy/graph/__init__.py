"""One model graph, built once: the user's model as a dataflow graph of one time step, read by
DPAP, compaction, folding, counting and every exporter (see ``model_graph.py``)."""
from .model_graph import ModelGraph, Node, PrunableLayer, find_layers
from .neurons import NeuronAdapter, adapter_for, register
from .run import outputs, run_window, window_steps
from .state import register_copies, reset_states
from .time_axis import batch_len, batch_slice
from .trace import build_graph

__all__ = ["ModelGraph", "Node", "PrunableLayer", "find_layers", "NeuronAdapter", "adapter_for",
           "register", "outputs", "run_window", "window_steps", "reset_states", "register_copies",
           "batch_len", "batch_slice", "build_graph"]
