"""torch.nn.utils.prune: zero out entries of a module's tensor through a mask that a forward pre-hook
applies before every forward.

Pruning `module.name` moves the Parameter to `name_orig`, adds the buffer `name_mask`, and sets the
plain attribute `name = name_orig * name_mask`, recomputed by the pruning method (itself the hook)
before each forward, so gradients reach `name_orig` only where the mask is 1 and state_dict holds
`name_orig` and `name_mask`, as in torch. `remove` makes the pruning permanent: `name` becomes the same
Parameter object again, now holding orig * mask.

Pruning a tensor a second time builds a PruningContainer: the new method sees only the entries (or,
structured, the channels) that are still unpruned and its mask is written back into the current one
(`_combine_masks`). Random methods draw from distgraph's generator (`dg.manual_seed`), so their masks
match torch's in counts and structure, not positions. L1/Ln importance ties go to the lowest index
(distgraph's topk is a stable sort); torch's CPU topk breaks ties in an unspecified order.

Where torch would leave a half-pruned module behind (its failure path moves the parameter to the end
of `_parameters` and, on a repeated pruning, drops the existing hook), the mask here is computed
before the module changes, so a failed pruning leaves the module as it was.
"""

import numbers
from abc import ABC, abstractmethod
from collections.abc import Iterable

from distgraph.autograd.formats import contiguous_format
from distgraph.errors import ShapeError
from distgraph.nn.utils.convert_parameters import parameters_to_vector
from distgraph.ops.creation import ones_like, rand, rand_like, zeros_like
from distgraph.ops.indexing import kthvalue, topk
from distgraph.ops.reduction import norm

__all__ = [
    "BasePruningMethod",
    "CustomFromMask",
    "Identity",
    "L1Unstructured",
    "LnStructured",
    "PruningContainer",
    "RandomStructured",
    "RandomUnstructured",
    "custom_from_mask",
    "global_unstructured",
    "identity",
    "is_pruned",
    "l1_unstructured",
    "ln_structured",
    "random_structured",
    "random_unstructured",
    "remove",
]


def _find_pruning_hook(module, name):
    """(key, hook) of the pruning method acting on `module.name`, (None, None) when it is not pruned."""
    found = [(k, h) for k, h in module._forward_pre_hooks.items() if isinstance(h, BasePruningMethod)]
    found = [(k, h) for k, h in found if h._tensor_name == name]
    if len(found) > 1:
        raise RuntimeError(
            f"prune: several pruning hooks act on the tensor {name} of module {module}; use one PruningContainer"
        )
    return found[0] if found else (None, None)


def _importance(importance_scores, t, what):
    """The scores that rank t's entries: t itself unless others, of t's shape, are given."""
    if importance_scores is None:
        return t
    if importance_scores.shape != t.shape:
        raise ShapeError(
            f"prune: importance_scores should have the same shape as {what}, "
            f"got {tuple(importance_scores.shape)} vs {tuple(t.shape)}"
        )
    return importance_scores


class BasePruningMethod(ABC):
    """A way of computing a pruning mask; subclasses set PRUNING_TYPE ("unstructured", "structured" with a
    `dim` attribute, or "global") and define compute_mask. Once applied, the method is the module's
    forward pre-hook that recomputes the pruned tensor."""

    _tensor_name = None  # set by apply(): the name of the tensor this method prunes

    def __call__(self, module, inputs):
        setattr(module, self._tensor_name, self.apply_mask(module))

    @abstractmethod
    def compute_mask(self, t, default_mask):
        """The mask (same shape as t) that prunes t further, starting from `default_mask`."""

    def apply_mask(self, module):
        """The pruned tensor name_orig * name_mask of a module this method was applied to."""
        if self._tensor_name is None:
            raise RuntimeError(f"{type(self).__name__}: module {module} has to be pruned with apply() first")
        mask = getattr(module, self._tensor_name + "_mask")
        orig = getattr(module, self._tensor_name + "_orig")
        return mask.to(dtype=orig.dtype) * orig

    @classmethod
    def apply(cls, module, name, *args, importance_scores=None, **kwargs):
        """Prune `module.name` with cls(*args, **kwargs), ranking entries by `importance_scores` (default:
        the tensor itself); a tensor already pruned gets a PruningContainer that combines the masks."""
        old_key, old = _find_pruning_hook(module, name)
        method = cls(*args, **kwargs)
        method._tensor_name = name
        orig = getattr(module, name)
        importance_scores = _importance(importance_scores, orig, f"parameter {name} of {module}")
        if old is None:
            hook, default_mask = method, ones_like(orig)
        else:
            hook = old if isinstance(old, PruningContainer) else PruningContainer(old)
            hook.add_pruning_method(method)
            default_mask = getattr(module, name + "_mask").detach().clone(memory_format=contiguous_format)
        try:
            mask = hook.compute_mask(importance_scores, default_mask=default_mask)
        except Exception:
            if hook is old:  # the container keeps only the methods whose masks it holds
                old._pruning_methods = old._pruning_methods[:-1]
            raise
        if old is None:
            module.register_parameter(name + "_orig", orig)
            del module._parameters[name]
        else:
            del module._forward_pre_hooks[old_key]
        module.register_buffer(name + "_mask", mask)
        setattr(module, name, hook.apply_mask(module))
        module.register_forward_pre_hook(hook)
        return hook

    def prune(self, t, default_mask=None, importance_scores=None):
        """t with this method's mask applied, without any module (importance_scores ranks t's entries)."""
        importance_scores = _importance(importance_scores, t, "tensor t")
        default_mask = default_mask if default_mask is not None else ones_like(t)
        return t * self.compute_mask(importance_scores, default_mask=default_mask)

    def remove(self, module):
        """Make the pruning permanent: `name` is the original Parameter again, now holding orig * mask."""
        if self._tensor_name is None:
            raise RuntimeError(f"Module {module} has to be pruned before pruning can be removed")
        weight = self.apply_mask(module)
        if hasattr(module, self._tensor_name):
            delattr(module, self._tensor_name)
        orig = module._parameters[self._tensor_name + "_orig"]
        orig.data = weight.data
        del module._parameters[self._tensor_name + "_orig"]
        del module._buffers[self._tensor_name + "_mask"]
        setattr(module, self._tensor_name, orig)


def _combine_masks(method, t, mask):
    """`mask` with `method`'s mask written over the part of t still unpruned: the entries where mask is 1
    (unstructured), the channels along method.dim with any entry left (structured), or all of t (global)."""
    new_mask = mask.to(dtype=t.dtype)
    if method.PRUNING_TYPE == "unstructured":
        slc = mask == 1
    elif method.PRUNING_TYPE == "structured":
        if not hasattr(method, "dim"):
            raise AttributeError(
                'Pruning methods of PRUNING_TYPE "structured" need to have the attribute `dim` defined.'
            )
        n_dims, dim = t.dim(), method.dim
        dim = dim + n_dims if dim < 0 else dim
        if dim < 0:
            raise IndexError(f"Index is out of bounds for tensor with dimensions {n_dims}")
        keep_channel = mask.sum(dim=[d for d in range(n_dims) if d != dim]) != 0
        slc = tuple(keep_channel if d == dim else slice(None) for d in range(n_dims))
    elif method.PRUNING_TYPE == "global":
        slc = (slice(None),) * t.dim()
    else:
        raise ValueError(f"Unrecognized PRUNING_TYPE {method.PRUNING_TYPE}")
    partial_mask = method.compute_mask(t[slc], default_mask=mask[slc])
    new_mask[slc] = partial_mask.to(dtype=new_mask.dtype)
    return new_mask


class PruningContainer(BasePruningMethod):
    """The methods applied, in order, to one tensor (iterative pruning); its mask is the last method's,
    computed over what the earlier ones left."""

    def __init__(self, *args):
        self._pruning_methods = ()
        if args:  # torch takes the name from a single method only; several share the first one's
            self._tensor_name = getattr(args[0], "_tensor_name", None)
        for method in args:
            self.add_pruning_method(method)

    def add_pruning_method(self, method):
        if not isinstance(method, BasePruningMethod):
            raise TypeError(f"{type(method)} is not a BasePruningMethod subclass")
        if self._tensor_name != method._tensor_name:
            raise ValueError(
                f"Can only add pruning methods acting on the parameter named '{self._tensor_name}' to "
                f"PruningContainer {self}. Found '{method._tensor_name}'"
            )
        self._pruning_methods += (method,)

    def __len__(self):
        return len(self._pruning_methods)

    def __iter__(self):
        return iter(self._pruning_methods)

    def __getitem__(self, idx):
        return self._pruning_methods[idx]

    def compute_mask(self, t, default_mask):
        return _combine_masks(self._pruning_methods[-1], t, default_mask)


class Identity(BasePruningMethod):
    """Prunes nothing: the mask is all ones (puts a tensor in pruned form, e.g. to load a pruned state)."""

    PRUNING_TYPE = "unstructured"

    def compute_mask(self, t, default_mask):
        return default_mask

    @classmethod
    def apply(cls, module, name):
        return super().apply(module, name)


class _Unstructured(BasePruningMethod):
    """Prunes `amount` entries, the first `_ranked_out` names among those the default mask leaves."""

    PRUNING_TYPE = "unstructured"

    def __init__(self, amount):
        _validate_pruning_amount_init(amount)
        self.amount = amount

    def compute_mask(self, t, default_mask):
        nparams_toprune = _compute_nparams_toprune(self.amount, t.nelement())
        _validate_pruning_amount(nparams_toprune, t.nelement())
        mask = default_mask.clone(memory_format=contiguous_format)
        if nparams_toprune != 0:
            mask.view(-1)[self._ranked_out(t, nparams_toprune)] = 0
        return mask


class RandomUnstructured(_Unstructured):
    """Prunes `amount` entries chosen uniformly at random."""

    def _ranked_out(self, t, k):
        return topk(rand_like(t).view(-1), k=k).indices

    @classmethod
    def apply(cls, module, name, amount):
        return super().apply(module, name, amount=amount)


class L1Unstructured(_Unstructured):
    """Prunes the `amount` entries of smallest absolute value."""

    def _ranked_out(self, t, k):
        return topk(t.abs().view(-1), k=k, largest=False).indices

    @classmethod
    def apply(cls, module, name, amount, importance_scores=None):
        return super().apply(module, name, amount=amount, importance_scores=importance_scores)


class _Structured(BasePruningMethod):
    """Prunes `amount` whole channels along `dim`, keeping those `_kept_channels` names (indices or a
    bool mask), within what the default mask leaves."""

    PRUNING_TYPE = "structured"

    def __init__(self, amount, dim=-1):
        _validate_pruning_amount_init(amount)
        self.amount, self.dim = amount, dim

    def compute_mask(self, t, default_mask):
        _validate_structured_pruning(t)
        _validate_pruning_dim(t, self.dim)
        nchannels = t.shape[self.dim]
        nparams_toprune = _compute_nparams_toprune(self.amount, nchannels)
        _validate_pruning_amount(nparams_toprune, nchannels)
        if nparams_toprune == 0:
            return default_mask
        kept = self._kept_channels(t, nchannels, nparams_toprune)
        mask = zeros_like(t)
        mask[tuple(kept if d == self.dim % t.dim() else slice(None) for d in range(t.dim()))] = 1
        mask *= default_mask.to(dtype=mask.dtype)
        return mask


class RandomStructured(_Structured):
    """Prunes `amount` whole channels along `dim`, chosen uniformly at random."""

    def _kept_channels(self, t, nchannels, k):
        prob = rand(nchannels)
        return prob > kthvalue(prob, k=k).values

    @classmethod
    def apply(cls, module, name, amount, dim=-1):
        return super().apply(module, name, amount=amount, dim=dim)


class LnStructured(_Structured):
    """Prunes the `amount` channels along `dim` of smallest Ln norm (`n` as torch.norm's p)."""

    def __init__(self, amount, n, dim=-1):
        super().__init__(amount, dim)
        self.n = n

    def _kept_channels(self, t, nchannels, k):
        return topk(_compute_norm(t, self.n, self.dim), k=nchannels - k, largest=True).indices

    @classmethod
    def apply(cls, module, name, amount, n, dim, importance_scores=None):
        return super().apply(module, name, amount=amount, n=n, dim=dim, importance_scores=importance_scores)


class CustomFromMask(BasePruningMethod):
    """Prunes where a given mask (same shape as the tensor) is 0."""

    PRUNING_TYPE = "global"

    def __init__(self, mask):
        self.mask = mask

    def compute_mask(self, t, default_mask):
        if default_mask.shape != self.mask.shape:
            raise ShapeError(
                f"CustomFromMask: default_mask shape {tuple(default_mask.shape)} must match "
                f"the mask's shape {tuple(self.mask.shape)}"
            )
        return default_mask * self.mask.to(dtype=default_mask.dtype)

    @classmethod
    def apply(cls, module, name, mask):
        return super().apply(module, name, mask=mask)


def identity(module, name):
    """Put `module.name` in pruned form with an all-ones mask."""
    Identity.apply(module, name)
    return module


def random_unstructured(module, name, amount):
    """Prune `amount` (a count, or a fraction in [0, 1]) random entries of `module.name`."""
    RandomUnstructured.apply(module, name, amount)
    return module


def l1_unstructured(module, name, amount, importance_scores=None):
    """Prune the `amount` entries of `module.name` (or of importance_scores) of smallest magnitude."""
    L1Unstructured.apply(module, name, amount=amount, importance_scores=importance_scores)
    return module


def random_structured(module, name, amount, dim):
    """Prune `amount` random channels of `module.name` along `dim`."""
    RandomStructured.apply(module, name, amount, dim)
    return module


def ln_structured(module, name, amount, n, dim, importance_scores=None):
    """Prune the `amount` channels of `module.name` along `dim` of smallest Ln norm."""
    LnStructured.apply(module, name, amount, n, dim, importance_scores=importance_scores)
    return module


def global_unstructured(parameters, pruning_method, importance_scores=None, **kwargs):
    """Prune (module, name) pairs together: `pruning_method(**kwargs)` (unstructured) ranks all their
    entries as one flat vector, and each tensor gets its slice of the result as a CustomFromMask."""
    if not isinstance(parameters, Iterable):
        raise TypeError("global_unstructured(): parameters is not an Iterable")
    parameters = list(parameters)  # read twice below: a generator would be empty the second time
    importance_scores = importance_scores if importance_scores is not None else {}
    if not isinstance(importance_scores, dict):
        raise TypeError("global_unstructured(): importance_scores must be of type dict")
    relevant_importance_scores = parameters_to_vector(
        [importance_scores.get((module, name), getattr(module, name)) for module, name in parameters]
    )
    default_mask = parameters_to_vector(
        [getattr(module, name + "_mask", ones_like(getattr(module, name))) for module, name in parameters]
    )
    method = pruning_method(**kwargs)
    if method.PRUNING_TYPE != "unstructured":
        raise TypeError(
            'Only "unstructured" PRUNING_TYPE supported for the `pruning_method`. '
            f"Found method {pruning_method} of type {method.PRUNING_TYPE}"
        )
    final_mask = _combine_masks(method, relevant_importance_scores, default_mask)
    pointer = 0
    for module, name in parameters:
        param = getattr(module, name)
        custom_from_mask(module, name, mask=final_mask[pointer : pointer + param.numel()].view_as(param))
        pointer += param.numel()


def custom_from_mask(module, name, mask):
    """Prune `module.name` where `mask` is 0."""
    CustomFromMask.apply(module, name, mask)
    return module


def remove(module, name):
    """Make the pruning of `module.name` permanent and drop its hook, mask buffer and `name_orig`."""
    key, hook = _find_pruning_hook(module, name)
    if hook is None:
        raise ValueError(f"Parameter '{name}' of module {module} has to be pruned before pruning can be removed")
    hook.remove(module)
    del module._forward_pre_hooks[key]
    return module


def is_pruned(module):
    """Whether `module` or any submodule has a pruning hook."""
    return any(
        isinstance(hook, BasePruningMethod)
        for _, sub in module.named_modules()
        for hook in sub._forward_pre_hooks.values()
    )


def _validate_pruning_amount_init(amount):
    """torch's check at construction: a non-negative int count or a float fraction in [0, 1]."""
    if not isinstance(amount, numbers.Real):
        raise TypeError(f"Invalid type for amount: {amount}. Must be int or float.")
    if (isinstance(amount, numbers.Integral) and amount < 0) or (
        not isinstance(amount, numbers.Integral) and (float(amount) > 1.0 or float(amount) < 0.0)
    ):
        raise ValueError(f"amount={amount} should either be a float in the range [0, 1] or a non-negative integer")


def _validate_pruning_amount(amount, tensor_size):
    """torch's check once the tensor is known: an int count no larger than the number of units."""
    if isinstance(amount, numbers.Integral) and amount > tensor_size:
        raise ValueError(f"amount={amount} should be smaller than the number of parameters to prune={tensor_size}")


def _validate_structured_pruning(t):
    if len(t.shape) <= 1:
        raise ValueError(
            "Structured pruning can only be applied to multidimensional tensors. "
            f"Found tensor of shape {tuple(t.shape)} with {len(t.shape)} dims"
        )


def _compute_nparams_toprune(amount, tensor_size):
    """The count to prune: `amount` itself, or a fraction of tensor_size rounded half to even (Python's round)."""
    return amount if isinstance(amount, numbers.Integral) else round(amount * tensor_size)


def _validate_pruning_dim(t, dim):
    if dim >= t.dim():
        raise IndexError(f"Invalid index {dim} for tensor of size {tuple(t.shape)}")


def _compute_norm(t, n, dim):
    """The Ln norm of each channel of t along `dim` (over every other dimension)."""
    dims = list(range(t.dim()))
    dims.remove(dims[dim])
    return norm(t, p=n, dim=dims)
