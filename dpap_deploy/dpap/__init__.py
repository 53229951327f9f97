"""DPAP: traces -> plasticity -> spine importance -> survival functions -> masks."""
from .config import DPAPConfig, SurvivalParams, preset
from .layers import PrunableLayer, find_prunable_layers, model_kind
from .pruner import DPAP

__all__ = ["DPAP", "DPAPConfig", "SurvivalParams", "preset", "PrunableLayer",
           "find_prunable_layers", "model_kind"]
