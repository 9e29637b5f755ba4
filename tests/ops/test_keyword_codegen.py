"""The generated wrappers (ops/keyword_codegen.py) bind every call as the function itself does, and add torch's
keywords: checked on functions of every parameter kind, each call made both ways."""

import pickle

import pytest

import distgraph as dg
from distgraph.ops import torch_keywords
from distgraph.ops.keyword_codegen import explicit


def plain(input, dim=None, keepdim=False, *, dtype=None):
    return ("plain", input, dim, keepdim, dtype)


def required_dim(input, dim, index, *, sparse=False):
    return ("required_dim", input, dim, index, sparse)


def positional_only(input, /, dim=0, keepdim=False):
    return ("positional_only", input, dim, keepdim)


def star_args(input, *sizes, dim=1, **options):
    return ("star_args", input, sizes, dim, options)


def kwargs_only(*args, **kwargs):
    return ("kwargs_only", args, kwargs)


def sentinel_default(input, dim=Ellipsis):
    return ("sentinel_default", input, dim is Ellipsis)


CALLS = {
    plain: [((1,), {}), ((1, 2), {}), ((1, 2, True), {}), ((1,), {"dim": 3, "dtype": "f"}), ((), {"input": 1}),
            ((1, 2, 3, 4), {}), ((1,), {"other": 2}), ((), {})],
    required_dim: [((1, 2, 3), {}), ((1,), {"dim": 2, "index": 3}), ((1, 2), {}), ((1,), {}), ((1, 2, 3), {"sparse": 1})],
    positional_only: [((1,), {}), ((1, 2, 3), {}), ((), {"input": 1}), ((1,), {"keepdim": 1})],
    star_args: [((1,), {}), ((1, 2, 3), {"dim": 0, "x": 5}), ((), {}), ((1,), {"options": 2})],
    kwargs_only: [((), {}), ((1, 2), {"dim": 3})],
    sentinel_default: [((1,), {}), ((1, 2), {}), ((1,), {"dim": None})],
}  # fmt: skip


def _outcome(fn, args, kwargs):
    try:
        return fn(*args, **kwargs)
    except TypeError:
        return TypeError


@pytest.mark.parametrize("fn", list(CALLS), ids=lambda f: f.__name__)
@pytest.mark.parametrize(("out", "numpy_names"), [(False, True), (True, False), (True, True)])
def test_every_call_binds_as_the_function_does(fn, out, numpy_names):
    wrapper = explicit(fn, fn.__name__, out, numpy_names)
    assert wrapper is not None
    for args, kwargs in CALLS[fn]:
        assert _outcome(wrapper, args, kwargs) == _outcome(fn, args, kwargs), (args, kwargs)


def test_axis_and_keepdims_fill_dim_and_keepdim_wherever_they_live():
    assert explicit(plain, "plain", False, True)(1, axis=2, keepdims=True) == plain(1, 2, True)
    gathered = explicit(required_dim, "required_dim", False, True)
    assert gathered(1, axis=2, index=3) == required_dim(1, 2, 3)
    with pytest.raises(TypeError, match=r"required_dim\(\) missing required argument 'index'"):
        gathered(1, axis=2)
    with pytest.raises(TypeError, match=r"missing required argument 'dim'"):
        gathered(1, index=3)
    assert explicit(star_args, "star_args", False, True)(1, 2, axis=0, keepdims=True) == star_args(
        1, 2, dim=0, keepdim=True
    )
    assert explicit(kwargs_only, "kwargs_only", False, True)(1, axis=0) == kwargs_only(1, dim=0)
    assert explicit(sentinel_default, "sentinel_default", False, True)(1) == sentinel_default(1)


def test_both_names_or_keepdims_without_keepdim_are_type_errors():
    wrapped = explicit(plain, "plain", False, True)
    with pytest.raises(TypeError, match=r"plain\(\) got multiple values for argument 'dim' \(as 'axis'\)"):
        wrapped(1, 2, axis=3)
    with pytest.raises(TypeError, match=r"got multiple values for argument 'keepdim' \(as 'keepdims'\)"):
        wrapped(1, keepdim=True, keepdims=True)
    with pytest.raises(TypeError, match="keepdims"):
        explicit(required_dim, "required_dim", False, True)(1, 2, 3, keepdims=True)
    with pytest.raises(TypeError, match=r"got multiple values for argument 'dim' \(as 'axis'\)"):
        explicit(kwargs_only, "kwargs_only", False, True)(dim=1, axis=0)


def test_functions_the_generator_leaves_to_the_generic_wrapper():
    def no_dim(input, other):
        return input

    def names_axis(input, axis=0):
        return input

    assert explicit(no_dim, "no_dim", False, True) is None
    assert explicit(names_axis, "names_axis", True, False) is None
    assert explicit(dg.zeros.__wrapped__, "zeros", True, False) is None  # its signature is set by hand


def test_every_installed_wrapper_is_generated():
    generic = [k[0].__name__ for k, w in torch_keywords._wrappers.items() if not w.__code__.co_filename.startswith("<")]
    assert len(torch_keywords._wrappers) > 300
    assert sorted(generic) == sorted(
        "arange empty eye full linspace logspace ones rand randint randn randperm zeros".split()
    )


def test_every_wrapper_pickles_by_reference_as_the_object_it_replaced_did():
    # a DataLoader's collate_fn=dg.stack, a function sent to a Ray worker: pickle finds a function by its module
    # and qualified name, and refuses one that is not the object found there
    for wrapper in torch_keywords._wrappers.values():
        assert pickle.loads(pickle.dumps(wrapper)) is wrapper, (wrapper.__module__, wrapper.__qualname__)
    assert pickle.loads(pickle.dumps(dg.special.expit)) is dg.sigmoid  # one object under two names
