"""torch.autograd.functional: vjp, jvp, jacobian, hessian, vhp, hvp on the reverse-mode engine.

Each call runs the user's function once on fresh copies of its inputs (detached leaves, or views of
them under create_graph so the result stays differentiable back to the caller's tensors), then asks
`autograd.grad` for what it needs. Forward-mode products come from the double-backward trick, as in
torch: v·J is linear in v, so J·u is the gradient of (v ↦ v·J)·u with respect to v, which needs only
backward rules written with differentiable ops (every distgraph op's is).

`vectorize=True` is accepted and ignored: the Jacobian is built one row (one backward) at a time,
which gives the same values torch's vmapped backward does. `strategy="forward-mode"` (with vectorize=True, as
torch requires) gives the same values by the same rows: distgraph's forward mode (autograd/forward_ad.py) is
itself double backward, so J·e_j column by column would cost more than a row per output. Error wording and types
are torch's.
"""

from distgraph.autograd.engine import grad as autograd_grad
from distgraph.autograd.grad_mode import enable_grad, is_grad_enabled, set_grad_enabled
from distgraph.autograd.tensor import Tensor
from distgraph.errors import AutogradError

__all__ = ["vjp", "jvp", "jacobian", "hessian", "hvp", "vhp"]


def _as_tuple(inp, arg_name, fn_name):
    """(whether `inp` was a tuple, `inp` as a tuple of Tensors), refusing anything else as torch does."""
    is_tuple = isinstance(inp, tuple)
    items = inp if is_tuple else (inp,)
    for i, el in enumerate(items):
        if not isinstance(el, Tensor):
            where = f"the value at index {i}" if is_tuple else f"the given {arg_name}"
            raise TypeError(
                f"The {arg_name} given to {fn_name} must be either a Tensor or a tuple of Tensors but {where} "
                f"has type {type(el)}."
            )
    return is_tuple, items


def _unpack(res, to_unpack):
    """Undo _as_tuple on a result: `to_unpack` is one flag, or (outer, inner) flags for nested results."""
    if isinstance(to_unpack, tuple):
        if not to_unpack[1]:
            res = tuple(el[0] for el in res)
        if not to_unpack[0]:
            res = res[0]
    elif not to_unpack:
        res = res[0]
    return res


def _preprocess(inputs, create_graph, need_graph):
    """Fresh inputs for the function: views (still differentiable to the caller's) under create_graph,
    detached leaves otherwise, so the caller's tensors' own graphs are never backpropagated through."""
    return tuple(
        inp.view_as(inp) if create_graph and inp.requires_grad else inp.detach().requires_grad_(need_graph)
        for inp in inputs
    )


def _postprocess(items, create_graph):
    """Results detached unless the caller asked for a graph (nested tuples for jacobian/hessian)."""
    if items and isinstance(items[0], Tensor):
        return items if create_graph else tuple(t.detach() for t in items)
    return tuple(_postprocess(t, create_graph) for t in items)


def _validate_v(v, other, is_other_tuple):
    if len(other) != len(v):
        if is_other_tuple:
            raise AutogradError(f"v is a tuple of invalid length: should be {len(other)} but got {len(v)}.")
        raise AutogradError("The given v should contain a single Tensor.")
    for idx, (el_v, el_other) in enumerate(zip(v, other)):
        if el_v.shape != el_other.shape:
            prepend = f"Entry {idx} in " if is_other_tuple else ""
            raise AutogradError(
                f"{prepend}v has invalid size: should be {tuple(el_other.shape)} but got {tuple(el_v.shape)}."
            )


_STRICT = {
    "grad_inputs": "The gradient with respect to input {i} is independent of the inputs of the user-provided "
    "function. This is not allowed in strict mode.",
    "jacobian": "While computing the hessian, found that the jacobian of the user-provided function with respect "
    "to input {i} is independent of the input. This is not allowed in strict mode. You should ensure that your "
    "function is twice differentiable and that the jacobian depends on the inputs (this would be violated by a "
    "linear function for example).",
    "hessian": "The hessian of the user-provided function with respect to input {i} is independent of the input. "
    "This is not allowed in strict mode. You should ensure that your function is thrice differentiable and that "
    "the hessian depends on the inputs.",
    "outputs": "Output {i} of the user-provided function does not require gradients. The outputs must be computed "
    "in a differentiable manner from the input when running in strict mode.",
}


def _check_requires_grad(tensors, kind, strict):
    """strict mode: refuse a result that does not depend on the inputs (`kind` picks torch's message)."""
    if not strict:
        return
    for i, t in enumerate(tensors):
        if t is None:
            raise AutogradError(
                f"The output of the user-provided function is independent of input {i}. This is not allowed in "
                "strict mode."
            )
        if not t.requires_grad:
            raise AutogradError(_STRICT[kind].format(i=i))


def grad_allow_unused(outputs, inputs, grad_outputs=None, create_graph=False, retain_graph=None):
    """autograd.grad over the outputs that require grad (None for every input when none does)."""
    if grad_outputs is None:
        grad_outputs = (None,) * len(outputs)
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o is not None and o.requires_grad]
    if not pairs:
        return (None,) * len(inputs)
    outs, gos = zip(*pairs)
    return autograd_grad(
        list(outs), list(inputs), list(gos), allow_unused=True, create_graph=create_graph, retain_graph=retain_graph
    )


_ZERO_FILL = {
    "back": "The output of the user-provided function is independent of input {i}. This is not allowed in strict mode.",
    "back_trick": "The gradient with respect to the input is independent of entry {i} in the grad_outputs when "
    "using the double backward trick to compute forward mode gradients. This is not allowed in strict mode.",
    "double_back": "The jacobian of the user-provided function is independent of input {i}. This is not allowed "
    "in strict mode.",
    "double_back_trick": "The hessian of the user-provided function is independent of entry {i} in the "
    "grad_jacobian. This is not allowed in strict mode as it prevents from using the double backward trick to "
    "replace forward mode AD.",
}


def _fill_in_zeros(grads, refs, strict, create_graph, stage):
    """None gradients become zeros shaped like `refs` (or, strict, torch's error for `stage`)."""
    res = []
    for i, g in enumerate(grads):
        if g is None:
            if strict:
                raise AutogradError(_ZERO_FILL[stage].format(i=i))
            g = _zeros_like(refs[i])
        elif strict and create_graph and not g.requires_grad:
            what = "hessian" if "double" in stage else "jacobian"
            raise AutogradError(
                f"The {what} of the user-provided function is independent of input {i}. This is not allowed in "
                "strict mode when create_graph=True."
            )
        res.append(g)
    return tuple(res)


def _zeros_like(t, requires_grad=False):
    from distgraph.ops.creation import zeros_like

    return zeros_like(t, requires_grad=requires_grad)


def trick_dummy(t):
    """The u of a double-backward trick (J·v as the gradient of (uᵀJ)·v in u): ones, not zeros. The result
    does not depend on u's values (uᵀJ is linear in u), but a backward rule may: the decompositions' (svd,
    eigh, qr: ops/linalg_decomp.py) take a factor's all-zero gradient for one the loss did not read, as
    torch's undefined one, and with zeros for u every block was zero, so J·v through them came out zero."""
    from distgraph.ops.creation import ones_like

    return ones_like(t, requires_grad=True)


def _check_v_none(v, tensors, fn_of):
    if v is None and (len(tensors) != 1 or tensors[0].numel() != 1):
        raise AutogradError(f"The vector v can only be None if {fn_of} a single Tensor with a single element.")


def _prepare_v(v, fn_name, create_graph, other, is_other_tuple):
    if v is None:
        return None
    _, v = _as_tuple(v, "v", fn_name)
    v = _preprocess(v, create_graph, need_graph=False)
    _validate_v(v, other, is_other_tuple)
    return v


def vjp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), vᵀ·J): the vector-Jacobian product at `inputs` (v may be None for a scalar output)."""
    with enable_grad():
        is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", "vjp")
        inputs = _preprocess(inputs, create_graph, need_graph=True)
        is_outputs_tuple, outputs = _as_tuple(func(*inputs), "outputs of the user-provided function", "vjp")
        _check_requires_grad(outputs, "outputs", strict)
        if v is None:
            _check_v_none(v, outputs, "the user-provided function returns")
        v = _prepare_v(v, "vjp", create_graph, outputs, is_outputs_tuple)
    with set_grad_enabled(True if create_graph else is_grad_enabled()):
        res = _fill_in_zeros(grad_allow_unused(outputs, inputs, v, create_graph), inputs, strict, create_graph, "back")
    return (
        _unpack(_postprocess(outputs, create_graph), is_outputs_tuple),
        _unpack(_postprocess(res, create_graph), is_inputs_tuple),
    )


def jvp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), J·v): the Jacobian-vector product, by the double-backward trick (module docstring)."""
    with enable_grad():
        is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", "jvp")
        inputs = _preprocess(inputs, create_graph, need_graph=True)
        if v is None:
            _check_v_none(v, inputs, "the input to the user-provided function is")
        v = _prepare_v(v, "jvp", create_graph, inputs, is_inputs_tuple)
        is_outputs_tuple, outputs = _as_tuple(func(*inputs), "outputs of the user-provided function", "jvp")
        _check_requires_grad(outputs, "outputs", strict)
        grad_outputs = tuple(trick_dummy(out) for out in outputs)
        grad_inputs = grad_allow_unused(outputs, inputs, grad_outputs, create_graph=True)
        _check_requires_grad(grad_inputs, "grad_inputs", strict)
    with set_grad_enabled(True if create_graph else is_grad_enabled()):
        res = grad_allow_unused(grad_inputs, grad_outputs, v, create_graph)
        res = _fill_in_zeros(res, outputs, strict, create_graph, "back_trick")
    return (
        _unpack(_postprocess(outputs, create_graph), is_outputs_tuple),
        _unpack(_postprocess(res, create_graph), is_outputs_tuple),
    )


def jacobian(func, inputs, create_graph=False, strict=False, vectorize=False, strategy="reverse-mode"):
    """J[i][j] = d output_i / d input_j, shaped output_i.shape + input_j.shape; one backward per output element.

    `vectorize` is accepted and ignored (the rows are computed one backward each, same values)."""
    if strategy not in ("forward-mode", "reverse-mode"):
        raise AssertionError(
            'Expected strategy to be either "forward-mode" or "reverse-mode". Hint: If your function has more outputs '
            'than inputs, "forward-mode" tends to be more performant. Otherwise, prefer to use "reverse-mode".'
        )
    if strategy == "forward-mode" and not vectorize:  # torch's rule (its words)
        raise NotImplementedError(
            "Computing Jacobian using forward-AD or forward-over-reverse Hessian isonly implemented for "
            "`vectorize=True`."
        )
    if strict and vectorize:
        raise AutogradError(
            "torch.autograd.functional.jacobian: `strict=True` and `vectorized=True` are not supported together. "
            "Please either set `strict=False` or `vectorize=False`."
        )
    with enable_grad():
        is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", "jacobian")
        inputs = _preprocess(inputs, create_graph, need_graph=True)
        is_outputs_tuple, outputs = _as_tuple(func(*inputs), "outputs of the user-provided function", "jacobian")
        _check_requires_grad(outputs, "outputs", strict)
        jac = tuple(jacobian_blocks(i, out, inputs, create_graph, strict) for i, out in enumerate(outputs))
        return _unpack(_postprocess(jac, create_graph), (is_outputs_tuple, is_inputs_tuple))


def jacobian_blocks(i, out, inputs, create_graph, strict):
    """The Jacobian blocks of output `i` against every input: a backward per element of `out`."""
    from distgraph.ops.shape import stack

    rows = [[] for _ in inputs]
    flat = out.reshape(-1)
    for j in range(out.numel()):
        vj = grad_allow_unused((flat[j],), inputs, retain_graph=True, create_graph=create_graph)
        for k, (g, inp) in enumerate(zip(vj, inputs)):
            if g is None:
                if strict:
                    raise AutogradError(
                        f"Output {i} of the user-provided function is independent of input {k}. This is not "
                        "allowed in strict mode."
                    )
                g = _zeros_like(inp)
            elif strict and create_graph and not g.requires_grad:
                raise AutogradError(
                    f"The jacobian of the user-provided function is independent of input {i}. This is not allowed "
                    "in strict mode when create_graph=True."
                )
            rows[k].append(g)
    shape = tuple(out.shape)
    return tuple(
        stack(r, 0).reshape(shape + tuple(inp.shape)) if r else _zeros_like(inp).expand(shape + tuple(inp.shape))
        for r, inp in zip(rows, inputs)
    )


def hessian(func, inputs, create_graph=False, strict=False, vectorize=False, outer_jacobian_strategy="reverse-mode"):
    """The Hessian of a scalar function: the jacobian of its jacobian (H[i][j] shaped input_i + input_j)."""
    is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", "hessian")
    if outer_jacobian_strategy not in ("forward-mode", "reverse-mode"):
        raise AssertionError('Expected strategy to be either "forward-mode" or "reverse-mode".')

    def single_output(*inp):
        out = func(*inp)
        is_out_tuple, t_out = _as_tuple(out, "outputs of the user-provided function", "hessian")
        _check_requires_grad(t_out, "outputs", strict)
        if is_out_tuple or not isinstance(out, Tensor):
            raise AutogradError("The function given to hessian should return a single Tensor")
        if out.numel() != 1:
            raise AutogradError("The Tensor returned by the function given to hessian should contain a single element")
        return out.squeeze()

    def jac_func(*inp):
        jac = jacobian(single_output, inp, create_graph=True)
        _check_requires_grad(jac, "jacobian", strict)
        return jac

    res = jacobian(
        jac_func, inputs, create_graph=create_graph, strict=strict, vectorize=vectorize,
        strategy=outer_jacobian_strategy,
    )  # fmt: skip
    return _unpack(res, (is_inputs_tuple, is_inputs_tuple))


def _scalar_first_grad(func, inputs, v, create_graph, strict, fn_name):
    """Shared head of vhp/hvp: fresh inputs, v, the scalar output and its gradient with a graph."""
    is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", fn_name)
    inputs = _preprocess(inputs, create_graph, need_graph=True)
    if v is None:
        _check_v_none(v, inputs, "the input to the user-provided function is")
    v = _prepare_v(v, fn_name, create_graph, inputs, is_inputs_tuple)
    is_outputs_tuple, outputs = _as_tuple(func(*inputs), "outputs of the user-provided function", fn_name)
    _check_requires_grad(outputs, "outputs", strict)
    if is_outputs_tuple or not isinstance(outputs[0], Tensor):
        raise AutogradError(f"The function given to {fn_name} should return a single Tensor")
    if outputs[0].numel() != 1:
        raise AutogradError(f"The Tensor returned by the function given to {fn_name} should contain a single element")
    jac = grad_allow_unused(outputs, inputs, create_graph=True)
    _check_requires_grad(jac, "jacobian", strict)
    return is_inputs_tuple, inputs, v, is_outputs_tuple, outputs, jac


def vhp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), vᵀ·H) for a scalar function: a backward of its gradient."""
    with enable_grad():
        is_inputs_tuple, inputs, v, is_outputs_tuple, outputs, jac = _scalar_first_grad(
            func, inputs, v, create_graph, strict, "vhp"
        )
    with set_grad_enabled(True if create_graph else is_grad_enabled()):
        res = _fill_in_zeros(
            grad_allow_unused(jac, inputs, v, create_graph), inputs, strict, create_graph, "double_back"
        )
    return (
        _unpack(_postprocess(outputs, create_graph), is_outputs_tuple),
        _unpack(_postprocess(res, create_graph), is_inputs_tuple),
    )


def hvp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), H·v) for a scalar function, by the double-backward trick (module docstring)."""
    with enable_grad():
        is_inputs_tuple, inputs, v, is_outputs_tuple, outputs, jac = _scalar_first_grad(
            func, inputs, v, create_graph, strict, "hvp"
        )
        grad_jac = tuple(trick_dummy(inp) for inp in inputs)
        double_back = grad_allow_unused(jac, inputs, grad_jac, create_graph=True)
        _check_requires_grad(jac, "hessian", strict)
    with set_grad_enabled(True if create_graph else is_grad_enabled()):
        res = grad_allow_unused(double_back, grad_jac, v, create_graph)
        res = _fill_in_zeros(res, inputs, strict, create_graph, "double_back_trick")
    return (
        _unpack(_postprocess(outputs, create_graph), is_outputs_tuple),
        _unpack(_postprocess(res, create_graph), is_inputs_tuple),
    )
