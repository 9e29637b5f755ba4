"""distgraph.data: torch.utils.data's names for datasets, samplers, collation and the DataLoader.

One module per concern: `dataset` (what is loaded), `sampler` (which indices, in what order),
`collate` (how samples become a batch), `loader` (the DataLoader that composes them).
"""

from distgraph.data.collate import default_collate, default_convert
from distgraph.data.dataset import Dataset, Subset, TensorDataset, random_split
from distgraph.data.loader import DataLoader
from distgraph.data.sampler import (
    BatchSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)

__all__ = [
    "BatchSampler",
    "DataLoader",
    "Dataset",
    "RandomSampler",
    "Sampler",
    "SequentialSampler",
    "Subset",
    "SubsetRandomSampler",
    "TensorDataset",
    "WeightedRandomSampler",
    "default_collate",
    "default_convert",
    "random_split",
]
