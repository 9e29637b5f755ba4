"""torch.autograd.graph: the graph's Node type, and the hooks that choose how saved tensors are kept.

`saved_tensors_hooks(pack_hook, unpack_hook)`: within it, each tensor an op saves for backward is
handed to `pack_hook`, which may return any object; backward hands that object to `unpack_hook`,
which returns the tensor to use. The hooks in force when an op is recorded are the ones its backward
uses (saved.py says what is saved). As torch's, they hold in the thread that set them. `save_on_cpu` keeps saved tensors in host memory;
`disable_saved_tensors_hooks` refuses saved_tensors_hooks within it, with the caller's message.
"""

import contextlib

from distgraph.autograd import saved
from distgraph.autograd.nodes import GraphNode as Node  # noqa: F401  (isinstance(t.grad_fn, Node))
from distgraph.backend import CPU


class saved_tensors_hooks:  # noqa: N801  (torch's name)
    """Context manager: `pack_hook(tensor) -> object` and `unpack_hook(object) -> tensor` for the tensors
    the ops recorded within save for backward (only the innermost pair applies, as torch's)."""

    def __init__(self, pack_hook, unpack_hook):
        self.pack_hook = pack_hook
        self.unpack_hook = unpack_hook

    def __enter__(self):
        if saved.local.disabled is not None:
            raise RuntimeError(saved.local.disabled)
        saved.local.stack.append((self.pack_hook, self.unpack_hook))
        saved.open_blocks[0] += 1

    def __exit__(self, *exc):
        saved.local.stack.pop()
        saved.open_blocks[0] -= 1


class save_on_cpu(saved_tensors_hooks):  # noqa: N801
    """Saved tensors kept in host memory, moved back to their device for backward (torch's, to trade
    transfers for GPU memory). On the CPU they stay as they are. `pin_memory` is accepted for torch's
    signature; numpy memory cannot be pinned, so host copies are plain ones."""

    def __init__(self, pin_memory=False, device_type="cuda"):
        super().__init__(lambda t: (t.device, t.to(CPU)), lambda packed: packed[1].to(packed[0]))


@contextlib.contextmanager
def disable_saved_tensors_hooks(error_message):
    """Within it, entering saved_tensors_hooks raises RuntimeError(error_message), as does entering it
    while saved_tensors_hooks are in force: for a feature that cannot work with them."""
    if saved.local.stack:
        raise RuntimeError(error_message)
    prev, saved.local.disabled = saved.local.disabled, error_message
    try:
        yield
    finally:
        saved.local.disabled = prev


def increment_version(tensor):
    """Mark `tensor` as written in place (torch's, for code writing into its memory outside distgraph's
    ops), so that backward refuses a saved copy of its old value."""
    for t in tensor if isinstance(tensor, list | tuple) else (tensor,):
        t._vc[0] += 1
