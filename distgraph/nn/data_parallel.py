"""nn.DataParallel: torch's single-process wrapper, for the cases where torch runs the wrapped module as it is.

torch's DataParallel copies the module onto every GPU of `device_ids` at each step, splits the batch among the
copies and gathers their outputs; torch's own documentation recommends DistributedDataParallel instead. On a
machine without a GPU torch calls the module unchanged, and with one device it moves the module and the inputs
there and calls it: both are offered here, so code written for torch runs. Several GPUs in one process are
refused with a pointer to distgraph's data parallelism, one process per GPU (distgraph.distributed's
DistributedDataParallel, or Trainer(workers=N)), which is what torch recommends too.

The wrapped module is the attribute `module`, so the state dict's keys start with "module.", as torch's.
"""

from distgraph.autograd.tensor import Tensor
from distgraph.backend import cuda_is_available, cupy_module, device
from distgraph.errors import DeviceError
from distgraph.nn.module import Module


def _gpu_count():
    return cupy_module().cuda.runtime.getDeviceCount() if cuda_is_available() else 0


def _to(obj, dev):
    """Tensors anywhere in nested tuples, lists and dicts moved to `dev` (torch's scatter to one device)."""
    if isinstance(obj, Tensor):
        return obj.to(dev)
    if isinstance(obj, tuple | list):
        return type(obj)(_to(o, dev) for o in obj)
    if isinstance(obj, dict):
        return {k: _to(v, dev) for k, v in obj.items()}
    return obj


class DataParallel(Module):
    def __init__(self, module, device_ids=None, output_device=None, dim=0):
        super().__init__()
        self.module = module
        self.dim = dim
        count = _gpu_count()
        if not count:  # torch's rule: no GPU, no device ids, the module is called as it is
            self.device_ids = []
            return
        ids = list(range(count)) if device_ids is None else list(device_ids)
        if not ids:
            raise DeviceError("DataParallel: no available devices were found (device_ids is empty)")
        if len(ids) > 1:
            raise DeviceError(
                f"DataParallel over {len(ids)} GPUs in one process is not offered: run one process per GPU with "
                "distgraph.distributed's DistributedDataParallel or dg.Trainer(workers=N) (as torch recommends), or "
                "pass device_ids=[0] to use one GPU"
            )
        self.src_device_obj = device(f"cuda:{ids[0]}" if isinstance(ids[0], int) else ids[0])
        self.device_ids = [self.src_device_obj.index]
        self.output_device = self.device_ids[0] if output_device is None else device(output_device).index
        module.to(self.src_device_obj)

    def forward(self, *inputs, **kwargs):
        if not self.device_ids:
            return self.module(*inputs, **kwargs)
        for t in (*self.module.parameters(), *self.module.buffers()):
            if t.device != self.src_device_obj:
                raise DeviceError(
                    f"DataParallel: module must have its parameters and buffers on device {self.src_device_obj} "
                    f"(device_ids[0]) but found one of them on device: {t.device}"
                )
        return self.module(*_to(inputs, self.src_device_obj), **_to(kwargs, self.src_device_obj))


def data_parallel(module, inputs, device_ids=None, output_device=None, dim=0, module_kwargs=None):
    """torch.nn.parallel.data_parallel: one DataParallel call of `module` on `inputs` (a tuple, or one input).
    Without a GPU the module is called as it is, as DataParallel does (torch's function raises there)."""
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    return DataParallel(module, device_ids, output_device, dim)(*inputs, **(module_kwargs or {}))
