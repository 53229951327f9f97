"""Compaction: physically smaller networks, and the folded graph for deployment."""
from .compact import Compacted, check_same_function, compact
from .fold import deployment_graph, fold_avgpool, fold_batchnorm, fold_for_deployment
from .plan import CompactionPlan, LayerPlan

__all__ = ["compact", "Compacted", "CompactionPlan", "LayerPlan",
           "check_same_function", "deployment_graph", "fold_avgpool",
           "fold_batchnorm", "fold_for_deployment"]
