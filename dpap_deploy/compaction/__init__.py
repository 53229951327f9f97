"""Compaction: physically smaller networks, and the folded graph for deployment."""
from .compact import (Compacted, apply_layer_masks, check_same_function, compact,
                      masks_from_dpap_state)
from .fold import deployment_graph, fold_avgpool, fold_batchnorm, fold_for_deployment
from .plan import CompactionPlan, LayerPlan

__all__ = ["compact", "Compacted", "CompactionPlan", "LayerPlan", "apply_layer_masks",
           "check_same_function", "masks_from_dpap_state", "deployment_graph", "fold_avgpool",
           "fold_batchnorm", "fold_for_deployment"]
