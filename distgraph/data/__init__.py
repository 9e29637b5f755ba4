"""distgraph.data: torch.utils.data's names for datasets, samplers, collation and the DataLoader.

One module per concern: `dataset` (what is loaded), `sampler` (which indices, in what order),
`collate` (how samples become a batch), `fetch` (how one batch is read), `loader` (the DataLoader that
composes them), `worker` and `worker_pool` (its worker processes: their side, the main process's side).
"""

from distgraph.data.collate import default_collate, default_convert
from distgraph.data.dataset import (
    ChainDataset,
    ConcatDataset,
    Dataset,
    IterableDataset,
    StackDataset,
    Subset,
    TensorDataset,
    random_split,
)
from distgraph.data.distributed import DistributedSampler
from distgraph.data.loader import DataLoader
from distgraph.data.sampler import (
    BatchSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)
from distgraph.data.worker import WorkerInfo, get_worker_info

__all__ = [
    "BatchSampler",
    "ChainDataset",
    "ConcatDataset",
    "DataLoader",
    "Dataset",
    "DistributedSampler",
    "IterableDataset",
    "RandomSampler",
    "Sampler",
    "SequentialSampler",
    "StackDataset",
    "Subset",
    "SubsetRandomSampler",
    "TensorDataset",
    "WeightedRandomSampler",
    "WorkerInfo",
    "default_collate",
    "default_convert",
    "get_worker_info",
    "random_split",
]
