"""dpap-deploy: DPAP pruning for snnTorch SNNs and PyTorch ANNs, and neuromorphic deployment.

Python API (the CLI is a thin layer over it)::

    from dpap_deploy import DPAP, DPAPConfig, TrainConfig, train
"""
from .dpap import DPAP, DPAPConfig, SurvivalParams, find_prunable_layers, preset
from .errors import DPAPError
from .training import TrainConfig, train

__version__ = "0.1.0"
__all__ = ["DPAP", "DPAPConfig", "SurvivalParams", "preset", "find_prunable_layers",
           "DPAPError", "TrainConfig", "train", "__version__"]
