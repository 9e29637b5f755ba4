"""distgraph.data: torch.utils.data's names for datasets, samplers, collation and the DataLoader.

One module per concern: `dataset` (what is loaded), `sampler` (which indices, in what order),
`collate` (how samples become a batch), `fetch` (how one batch is read), `loader` (the DataLoader that
composes them), `worker` and `worker_pool` (its worker processes: their side, the main process's side).

The module paths torch users type are this package's modules registered under torch's names, not copies:
`distgraph.data.dataloader` (DataLoader, default_collate, get_worker_info: this package) and
`distgraph.data._utils.collate` (collate.py); distgraph.utils registers them again under distgraph.utils.data.
"""

import sys

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

_package = sys.modules[__name__]
for _alias in ("dataloader", "_utils"):
    sys.modules[f"{__name__}.{_alias}"] = _package
sys.modules[f"{__name__}._utils.collate"] = sys.modules[f"{__name__}.collate"]

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
