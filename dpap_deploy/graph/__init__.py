"""One model graph, built once: the user's model as a dataflow graph of one time step, read by
DPAP, compaction, folding, counting and every exporter (see ``model_graph.py``). Running it over
a window is ``dpap_deploy.executor.run``."""
from .model_graph import ModelGraph, Node, PrunableLayer, find_layers
from .neurons import NeuronAdapter, adapter_for, register
from .state import register_copies, reset_states
from .time_axis import batch_len, batch_slice, window_steps
from .trace import build_graph, graph_of

__all__ = ["ModelGraph", "Node", "PrunableLayer", "find_layers", "NeuronAdapter", "adapter_for",
           "register", "window_steps", "reset_states", "register_copies", "batch_len",
           "batch_slice", "build_graph", "graph_of"]

