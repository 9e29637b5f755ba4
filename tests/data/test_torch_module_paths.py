"""The module paths torch users import from resolve to distgraph's own objects (no copies)."""

import importlib

import pytest

import distgraph.data as data


@pytest.mark.parametrize(
    "path, names",
    [
        ("distgraph.utils.data.dataloader", ["DataLoader", "default_collate", "get_worker_info"]),
        ("distgraph.data.dataloader", ["DataLoader", "default_collate", "get_worker_info"]),
        ("distgraph.utils.data._utils.collate", ["default_collate", "default_convert"]),
    ],
)
def test_torch_data_module_paths_import(path, names):
    module = importlib.import_module(path)
    for name in names:
        assert getattr(module, name) is getattr(data, name)
