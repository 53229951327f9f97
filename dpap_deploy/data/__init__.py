"""Datasets as in-memory tensors: ``load_dataset(name, data_root) -> Dataset``."""
from .base import Dataset, load_dataset, DATASETS

__all__ = ["Dataset", "load_dataset", "DATASETS"]
