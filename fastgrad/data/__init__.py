"""Datasets and batching, as ``torch.utils.data``: Dataset, TensorDataset, Subset,
ConcatDataset, random_split and DataLoader."""

from .dataset import ConcatDataset, Dataset, Subset, TensorDataset, collate, random_split
from .loader import DataLoader
from .workers import get_worker_info

__all__ = [
    "ConcatDataset",
    "DataLoader",
    "Dataset",
    "Subset",
    "TensorDataset",
    "collate",
    "random_split",
    "get_worker_info",
]
