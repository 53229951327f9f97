"""dpap-deploy: DPAP pruning for snnTorch SNNs and PyTorch ANNs, and neuromorphic deployment.

Python API (the CLI is a thin layer over it)::

    from dpap_deploy import DPAP, DPAPConfig, TrainConfig, train
    from dpap_deploy import check_deployable      # will it deploy? (before training)

The names are imported on first use, so that ``dpap-deploy`` can refuse a bad option before
it loads torch.
"""
from importlib import import_module

from .errors import DeployabilityWarning, DPAPError, NotDeployableError

__version__ = "0.1.0"
_LAZY = {"DPAP": ".dpap", "DPAPConfig": ".dpap", "SurvivalParams": ".dpap", "preset": ".dpap",
         "find_prunable_layers": ".dpap", "TrainConfig": ".train_config", "train": ".training",
         "check_deployable": ".deployability", "Deployability": ".deployability",
         "make_deployable": ".convert"}
__all__ = ["DPAP", "DPAPConfig", "SurvivalParams", "preset", "find_prunable_layers",
           "DPAPError", "TrainConfig", "train", "check_deployable", "Deployability",
           "DeployabilityWarning", "NotDeployableError", "make_deployable", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dpap_deploy' has no attribute {name!r}")
