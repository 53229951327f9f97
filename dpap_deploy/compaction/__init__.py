"""Compaction: physically smaller networks, and the folded graph for deployment."""
from ..masks import from_dpap_state as masks_from_dpap_state   # its name here before
from .compact import Compacted, check_same_function, compact
from .fold import deployment_graph, fold_avgpool, fold_batchnorm, fold_for_deployment
from .plan import CompactionPlan, LayerPlan

__all__ = ["compact", "Compacted", "CompactionPlan", "LayerPlan",
           "check_same_function", "masks_from_dpap_state", "deployment_graph", "fold_avgpool",
           "fold_batchnorm", "fold_for_deployment"]
