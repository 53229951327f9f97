"""Moved to :mod:`dpap_deploy.masks`; these names stay importable from here until their last
importers (``dpap/pruner.py``, ``training/``, ``report/build.py``, ``convert_tune.py``) import
them from there."""
from ..masks import (apply_masks, layer_param_masks, layer_stats,  # noqa: F401
                     nonzero_kernels, recurrent_of, removed_fraction)
