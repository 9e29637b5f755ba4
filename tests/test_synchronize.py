"""`distgraph.backend.synchronize`, torch.cuda.synchronize's counterpart: a timer around GPU work needs it,
since cupy's calls return once their kernels are queued."""

import pytest

import distgraph as dg
from distgraph.backend import synchronize
from distgraph.errors import DeviceError


def test_synchronize_leaves_nothing_queued_on_the_device(device):
    x = dg.randn(512, 512, device=device)
    for _ in range(20):
        x = x @ x / 512
    synchronize(device)
    if device != "cpu":
        assert dg.device(device).xp.cuda.get_current_stream().done  # every queued kernel has finished
    assert x.shape == (512, 512)


def test_synchronize_names_a_device_it_does_not_know():
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        synchronize("tpu")
