"""Matrix products (matmul with batching and broadcasting, einsum) and softmax / log_softmax.

matmul's op works on >= 2-D operands; 1-D operands are lifted to matrices and squeezed back by the
public function (torch's rules), so the backward rule is the plain pair of products and the engine
sums broadcast batch dims.
"""

import builtins
import math
import string

import numpy as np

from distgraph.autograd.function import apply
from distgraph.autograd.tensor import TENSOR_TYPES, Tensor
from distgraph.errors import ShapeError
from distgraph.ops import cache_blocks, same_dtype
from distgraph.ops import elementwise as ew
from distgraph.ops.autocast import autocast_op
from distgraph.ops.reduction import _sum, normalize_dim, sum
from distgraph.ops.registry import defop
from distgraph.ops.shape import _permute, expand, reshape, unsqueeze


def _mm(a, b):
    """a @ b on arrays; 2-D operands use .dot, twice as fast as matmul's ufunc machinery on small matrices.
    A C-contiguous a of more dims against a 2-D b is one 2-D product with a's leading dims folded into its
    rows: numpy's matmul runs one BLAS call per leading index (measured: (32, 128, 512) · (512, 512) in
    17.3 ms against 13.9 ms folded)."""
    if b.ndim == 2:
        if a.ndim == 2:
            return a.dot(b)
        if a.ndim > 2 and a.flags.c_contiguous and a.shape[-1] == b.shape[0]:
            rows = math.prod(a.shape[:-1])  # (not -1: numpy cannot infer it when a dim is 0)
            return a.reshape(rows, a.shape[-1]).dot(b).reshape(*a.shape[:-1], b.shape[1])
    return a @ b


@defop("matmul", kind="matmul", save=(0, 1), saved_for={0: 1, 1: 0})
def _matmul(xp, a, b):
    return _mm(a, b)


def _mT(x):
    """Swap the last two dims (a view), skipping the argument checks of the public transpose."""
    dims = tuple(range(x.array.ndim - 2)) + (x.array.ndim - 1, x.array.ndim - 2)
    return apply(_permute, (x,), {"dims": dims})


# a @ bᵀ and aᵀ @ b as ops of their own: matmul's backward is then two op calls, not four (the
# transposes are free views inside the forward), which is most of an MLP step's backward overhead
@defop("matmul_nt", kind="matmul", save=(0, 1))
def _matmul_nt(xp, a, b):
    return _mm(a, b.swapaxes(-1, -2))


@defop("matmul_tn", kind="matmul", save=(0, 1))
def _matmul_tn(xp, a, b):
    return _mm(a.swapaxes(-1, -2), b)


@_matmul.grad
def _(ctx, g):  # C = A B: dA = G Bᵀ, dB = Aᵀ G
    a, b = ctx.inputs
    ga = apply(_matmul_nt, (g, b)) if ctx.next[0] is not None else None
    gb = apply(_matmul_tn, (a, g)) if ctx.next[1] is not None else None
    return ga, gb


@_matmul.array_grad
def _(ctx, g):
    a, b = ctx.inputs[0].array, ctx.inputs[1].array
    ga = _mm(g, b.swapaxes(-1, -2)) if ctx.next[0] is not None else None
    gb = _mm(a.swapaxes(-1, -2), g) if ctx.next[1] is not None else None
    return ga, gb


@_matmul_nt.grad
def _(ctx, g):  # C = A Bᵀ: dA = G B, dB = Gᵀ A
    a, b = ctx.inputs
    ga = apply(_matmul, (g, b)) if ctx.next[0] is not None else None
    gb = apply(_matmul_tn, (g, a)) if ctx.next[1] is not None else None
    return ga, gb


@_matmul_nt.array_grad
def _(ctx, g):
    a, b = ctx.inputs[0].array, ctx.inputs[1].array
    ga = _mm(g, b) if ctx.next[0] is not None else None
    gb = _mm(g.swapaxes(-1, -2), a) if ctx.next[1] is not None else None
    return ga, gb


@_matmul_tn.grad
def _(ctx, g):  # C = Aᵀ B: dA = B Gᵀ, dB = A G
    a, b = ctx.inputs
    ga = apply(_matmul_nt, (b, g)) if ctx.next[0] is not None else None
    gb = apply(_matmul, (a, g)) if ctx.next[1] is not None else None
    return ga, gb


@_matmul_tn.array_grad
def _(ctx, g):
    a, b = ctx.inputs[0].array, ctx.inputs[1].array
    ga = _mm(b, g.swapaxes(-1, -2)) if ctx.next[0] is not None else None
    gb = _mm(a, g) if ctx.next[1] is not None else None
    return ga, gb


@autocast_op("matmul")
def matmul(input, other):
    if type(input) in TENSOR_TYPES and type(other) in TENSOR_TYPES and input.array.dtype == other.array.dtype:
        a, b = input, other
    elif isinstance(input, Tensor) and isinstance(other, Tensor) and input.array.dtype != other.array.dtype:
        same_dtype.matmul(input, other)  # always raises: products refuse mixed dtypes, as torch's
    else:
        a, b = ew._operands(input, other)
    x, y = a.array, b.array  # read once: Tensor.shape/.ndim are properties (per-op cost)
    if x.ndim == 0 or y.ndim == 0:
        raise ShapeError(f"matmul: both arguments need at least 1 dimension, got {x.shape} and {y.shape}")
    if x.shape[-1] != y.shape[-2 if y.ndim > 1 else 0]:
        raise ShapeError(
            f"matmul: mat1 and mat2 shapes cannot be multiplied ({'x'.join(map(str, x.shape))} and "
            f"{'x'.join(map(str, y.shape))})"
        )
    if x.ndim >= 2 and y.ndim >= 2:
        return apply(_matmul, (a, b))
    squeeze_a, squeeze_b = a.ndim == 1, b.ndim == 1
    out = _matmul(unsqueeze(a, 0) if squeeze_a else a, unsqueeze(b, -1) if squeeze_b else b)
    shape = out.shape
    if squeeze_b:
        shape = shape[:-1]
    if squeeze_a:
        shape = shape[:-2] + shape[-1:] if not squeeze_b else shape[:-1]
    return reshape(out, shape)


@autocast_op("mm")
def mm(input, mat2):
    if input.ndim != 2 or mat2.ndim != 2:
        raise ShapeError(f"mm: expected 2-D tensors, got {tuple(input.shape)} and {tuple(mat2.shape)}")
    return matmul(input, mat2)


@autocast_op("bmm")
def bmm(input, mat2):
    if input.ndim != 3 or mat2.ndim != 3 or input.shape[0] != mat2.shape[0]:
        raise ShapeError(
            f"bmm: expected 3-D tensors with equal batch, got {tuple(input.shape)} and {tuple(mat2.shape)}"
        )
    return matmul(input, mat2)


def dot(input, other):
    if input.ndim != 1 or other.ndim != 1:
        raise ShapeError(f"dot: 1D tensors expected, but got {input.ndim}D and {other.ndim}D tensors")
    return matmul(input, other)


@autocast_op("mv")
def mv(input, vec):
    if input.ndim != 2 or vec.ndim != 1:
        raise ShapeError(
            f"mv: expected a 2-D matrix and a 1-D vector, got shapes {tuple(input.shape)} and {tuple(vec.shape)}"
        )
    return matmul(input, vec)


def outer(input, vec2):
    for name, v in (("self", input), ("vec2", vec2)):
        if v.ndim != 1:
            raise ShapeError(f"outer: Expected 1-D argument {name}, but got {v.ndim}-D (shape {tuple(v.shape)})")
    return ew.mul(unsqueeze(input, 1), unsqueeze(vec2, 0))


ger = outer


def scaled_sum(name, input, prod, beta, alpha, *, layout_of_input=False):
    """beta·input + alpha·prod for addmm and its kin (ops/linalg_extra.py), input expanded to prod's shape as
    torch does (so a 0-d input's dtype counts in the promotion as a dimensioned tensor's: addr of a float64
    0-d input and float32 vectors is float64, as torch's); beta = 0 ignores input's values (a NaN there does
    not reach the result), as torch's, leaving input a zero gradient. The result is laid out as the product
    (torch's matmul-based ops), or as input with `layout_of_input` (torch's addr, an elementwise op)."""
    out, shp = tuple(prod.shape), tuple(input.shape)
    if len(shp) > len(out) or builtins.any(a not in (1, b) for a, b in zip(shp[::-1], out[::-1])):
        raise ShapeError(f"{name}: input of shape {shp} cannot be expanded to the product's shape {out}")
    input = expand(input, out)
    if alpha != 1:
        prod = ew.mul(prod, alpha)
    if beta == 0:
        everywhere = Tensor(input.device.xp.ones(input.shape, dtype=bool), device=input.device)
        return ew.add(prod, ew.where(everywhere, 0, input))
    scaled = ew.mul(input, beta) if beta != 1 else input
    return ew.add(scaled, prod) if layout_of_input else ew.add(prod, scaled)


@autocast_op("addmm")
def addmm(input, mat1, mat2, beta=1, alpha=1):
    for name, m in (("mat1", mat1), ("mat2", mat2)):
        if m.ndim != 2:
            raise ShapeError(f"addmm: {name} must be a matrix, got a {m.ndim}-D tensor of shape {tuple(m.shape)}")
    same_dtype.addmm(input, mat1, mat2)
    return scaled_sum("addmm", input, matmul(mat1, mat2), beta, alpha)


# ---- einsum ---------------------------------------------------------------------------------------------
# each operand is read only for the others' gradients (torch saves it only where one needs one)
@defop(
    "einsum", kind="matmul", save=tuple(range(8)), saved_for={i: tuple(k for k in range(8) if k != i) for i in range(8)}
)
def _einsum(xp, *operands, equation):
    return xp.einsum(equation, *operands, optimize=len(operands) > 2)


@_einsum.grad
def _(ctx, g):
    # d/d operand_i: einsum of g with the other operands into operand_i's distinct subscripts; letters
    # only operand_i has (summed away in forward) are broadcast back, and repeated letters (diagonals,
    # traces) are placed back on their diagonal.
    inputs_spec, out_spec = ctx.attrs["equation"].split("->")
    specs = inputs_spec.split(",")
    grads = []
    for i, (x, spec) in enumerate(zip(ctx.inputs, specs)):
        if ctx.next[i] is None:
            grads.append(None)
            continue
        others = [s for j, s in enumerate(specs) if j != i]
        others_t = [t if t.dtype == g.dtype else ew.cast(t, g.array.dtype) for j, t in enumerate(ctx.inputs) if j != i]
        unique = "".join(dict.fromkeys(spec))
        lone = [c for c in unique if c not in out_spec and not builtins.any(c in s for s in others)]
        kept = "".join(c for c in unique if c not in lone)
        gi = einsum(",".join([out_spec] + others) + "->" + kept, g, *others_t) if others_t or kept != out_spec else g
        if lone:
            gi = reshape(gi, tuple(gi.shape[kept.index(c)] if c in kept else 1 for c in unique))
            gi = expand(gi, tuple(x.shape[spec.index(c)] for c in unique))
        if unique != spec:
            gi = _onto_diagonal(gi, unique, spec, x, ctx.attrs["equation"])
        grads.append(gi)
    return tuple(grads)


def _onto_diagonal(gi, unique, spec, x, equation):
    """gi has subscripts `unique`; return the tensor of subscripts `spec` (letters repeated) that holds
    gi on its diagonals and zeros elsewhere: every repeat of a letter gets a fresh letter, tied to the
    first by an identity matrix, so one einsum builds it."""
    xp = x.device.xp
    fresh = iter(c for c in string.ascii_letters if c not in equation)
    renamed, eyes, eye_specs, seen = [], [], [], set()
    for pos, c in enumerate(spec):
        if c in seen:
            new = next(fresh)
            eyes.append(Tensor(xp.eye(x.shape[pos], dtype=x.array.dtype), device=x.device))
            eye_specs.append(c + new)
            renamed.append(new)
        else:
            seen.add(c)
            renamed.append(c)
    return einsum(",".join([unique, *eye_specs]) + "->" + "".join(renamed), gi, *eyes)


def _spell_out(equation, operands):
    """The equation in explicit form with '...' replaced by letters: implicit output (letters seen
    once, sorted, after the broadcast dims) made explicit, broadcast dims right-aligned as in torch."""
    ins, out = equation.split("->") if "->" in equation else (equation, None)
    specs = ins.split(",")
    if len(specs) != len(operands):
        raise ShapeError(f"einsum(): {len(specs)} operand subscripts for {len(operands)} operands in {equation!r}")
    named = [len(s.replace("...", "")) for s in specs]
    n_ell = builtins.max([t.ndim - n for s, t, n in zip(specs, operands, named) if "..." in s], default=0)
    ell = "".join([c for c in string.ascii_letters if c not in equation][: builtins.max(n_ell, 0)])
    if out is None:
        letters = ins.replace(",", "").replace(".", "")
        out = ("..." if "..." in ins else "") + "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    specs = [
        s.replace("...", ell[len(ell) - (t.ndim - n) :] if t.ndim > n else "")
        for s, t, n in zip(specs, operands, named)
    ]
    return ",".join(specs) + "->" + out.replace("...", ell)


def _sublist_equation(args):
    """torch.einsum's sublist form (op1, sublist1, op2, sublist2, ..., [sublist_out]) as (equation, operands):
    subscripts 0-25 are 'A'-'Z', 26-51 'a'-'z', Ellipsis '...'."""

    def letters(sublist):
        out = []
        for n in sublist:
            if n is Ellipsis:
                out.append("...")
            elif isinstance(n, int) and 0 <= n < 52:
                out.append(chr(ord("A") + n) if n < 26 else chr(ord("a") + n - 26))
            else:
                raise ValueError(f"einsum(): subscript {n!r} in subscript list is not within the valid range [0, 52)")
        return "".join(out)

    equation = ",".join(letters(sub) for sub in args[1::2])
    if len(args) % 2 == 1:
        return equation + "->" + letters(args[-1]), args[:-1:2]
    return equation, args[::2]


@autocast_op("einsum")
def einsum(equation, *operands):
    """torch.einsum: explicit or implicit output, repeated subscripts, '...' with broadcasting; the
    equation as a string or in the sublist form einsum(a, [0, 1], b, [1, 2], [0, 2])."""
    if isinstance(equation, Tensor):
        equation, operands = _sublist_equation((equation, *operands))
    elif len(operands) == 1 and isinstance(operands[0], list | tuple):
        operands = tuple(operands[0])
    equation = _spell_out(equation.replace(" ", ""), operands)
    specs = equation.split("->")[0].split(",")
    sizes = {}
    for s, t in zip(specs, operands):
        if len(s) != t.ndim:
            raise ShapeError(
                f"einsum(): subscripts {s!r} do not match operand of shape {tuple(t.shape)} in {equation!r}"
            )
        for c, n in zip(s, t.shape):
            if sizes.get(c, 1) != 1 and n not in (1, sizes[c]):
                raise ShapeError(
                    f"einsum(): subscript {c!r} has size {n} in operand of shape {tuple(t.shape)} and "
                    f"{sizes[c]} elsewhere in {equation!r}"
                )
            if sizes.get(c, 1) == 1:
                sizes[c] = n
    operands = _sum_out_lone_letters(specs, equation.split("->")[1], operands, sizes)
    operands = [  # size-1 dims broadcast against the letter's size elsewhere, as in torch
        expand(t, tuple(sizes[c] for c in s)) if builtins.any(n != sizes[c] for c, n in zip(s, t.shape)) else t
        for s, t in zip(specs, operands)
    ]
    return _einsum(*operands, equation=equation)


def _sum_out_lone_letters(specs, out_spec, operands, sizes):
    """Each operand summed (keepdim) over the letters summed away with size > 1 in it alone, as torch's einsum does
    first (backward reads those sums, so an in-place write to the operand does not stop it); mixed dtypes refused."""
    same_dtype.einsum(specs, out_spec, operands)  # where torch's contraction is a bmm
    summed = []
    for i, (s, t) in enumerate(zip(specs, operands)):
        dims = tuple(
            k
            for k, c in enumerate(s)
            if c not in out_spec
            and s.count(c) == 1
            and t.shape[k] != 1
            and builtins.all(
                o.shape[z.index(c)] == 1 for j, (z, o) in enumerate(zip(specs, operands)) if j != i and c in z
            )
        )
        if dims:
            t = sum(t, dim=dims, keepdim=True)
            sizes.update({s[k]: 1 for k in dims})
        summed.append(t)
    return summed


# ---- softmax ------------------------------------------------------------------------------------------------
def opmath(fn, *tensors, **attrs):
    """fn(*tensors, **attrs) for a float16 input, its float16 tensors (None: an absent weight or bias) cast to
    float32 first and the result cast back: computed in float32 and rounded once, forward and backward (the
    casts' gradients), as torch's kernels compute float16 in their opmath type. In float16 throughout,
    layer_norm, group_norm, rms_norm and softmax at (64, 1024) were 3-30x less accurate than torch's. Callers
    test for float16 and call fn directly otherwise, so other dtypes pay no call."""
    wide = (t if t is None or t.array.dtype != np.float16 else ew.cast(t, np.float32) for t in tensors)
    return ew.cast(fn(*wide, **attrs), np.float16)


def _rows(x, axis):
    """cache_blocks.row_buffer for a pass along x's last axis (the per-row max and sum then broadcast along
    rows, and the reductions run along them: the same bits); none along another axis."""
    return cache_blocks.row_buffer(x, x.shape[-1] if x.ndim and axis == x.ndim - 1 else 0)


@defop("softmax", kind="other", save=(), saves_output=True)
def _softmax(xp, x, axis):
    """exp(x − max) / sum, as torch's CPU kernels round it: along the last dim they multiply by the
    sum's reciprocal, along another they divide (so log(softmax(x)) equals log_softmax(x) where torch's do)."""
    if x.size == 0:
        return x.copy()
    with _rows(x, axis):
        return _softmax_of(xp, x, axis)


def _softmax_of(xp, x, axis):
    e = x - x.max(axis=axis, keepdims=True)
    e = xp.exp(e, out=e) if x.ndim else xp.exp(e)  # in place: one (M, N) array in all
    total = e.sum(axis=axis, keepdims=True)
    e = e if e.flags.c_contiguous else e.copy()  # row-major whatever x's layout, as torch's (0-d stays 0-d)
    if axis == x.ndim - 1:
        e *= 1 / total
    else:
        e /= total
    return e


@_softmax.grad
def _softmax_grad(ctx, g):
    out = ctx.out
    gy = ew.mul(g, out)  # torch's g·y − y·Σ(g·y), as the array rule below (the same bits)
    return ew.sub(gy, ew.mul(out, sum(gy, dim=ctx.attrs["axis"], keepdim=True)))


@_softmax.array_grad
def _softmax_array_grad(ctx, g):
    """torch's form, g·y − y·Σ(g·y), in two arrays: g·y, then y·Σ taken from it in place."""
    out = ctx.out_array
    blocked = cache_blocks.softmax_grad(out, g, ctx.attrs["axis"])  # large host arrays: by rows, the same bits
    if blocked is not None:
        return blocked
    gy = g * out
    if gy.ndim == 0:
        return gy - out * gy
    with _rows(gy, ctx.attrs["axis"]):
        t = out * _sum.forward(ctx.inputs[0].device.xp, gy, (ctx.attrs["axis"],), True)  # sum's bits (float16 too)
        return ctx.inputs[0].device.xp.subtract(gy, t, out=t)


@defop("safe_softmax", kind="other", save=(), saves_output=True)
def _safe_softmax(xp, x, axis):
    """softmax, but 0 (not NaN) along a slice that is all -inf (torch._safe_softmax, used by attention).

    The max of an all -inf slice is replaced by 0 so nothing computes -inf - (-inf); its exps are
    then all 0, and dividing by a sum of 1 instead of 0 leaves exact zeros.
    """
    if x.size == 0:
        return x.copy()
    m = x.max(axis=axis, keepdims=True)
    m[m == -xp.inf] = 0
    e = x - m
    e = xp.exp(e, out=e) if x.ndim else xp.exp(e)  # in place: one fresh array, not two
    s = e.sum(axis=axis, keepdims=True)
    s[s == 0] = 1
    e /= s
    return e


# softmax's rules hold as they are: out is 0 along an all -inf slice, so its gradient there is 0 too
_safe_softmax.grad(_softmax_grad)
_safe_softmax.array_grad(_softmax_array_grad)


@defop("log_softmax", kind="other", save=(), saves_output=True)
def _log_softmax(xp, x, axis):
    if x.size == 0:
        return x.copy()
    with _rows(x, axis):
        out = x - x.max(axis=axis, keepdims=True)
        lse = xp.log(xp.exp(out).sum(axis=axis, keepdims=True))
        if out.ndim:
            out -= lse  # in place: the shifted x becomes the output
        else:
            out = out - lse
    return out if out.flags.c_contiguous else out.copy()  # row-major, as torch's (ascontiguousarray: 0-d to 1-d)


@_log_softmax.grad
def _(ctx, g):
    axis = ctx.attrs["axis"]
    return ew.sub(g, ew.mul(ew.exp(ctx.out), sum(g, dim=axis, keepdim=True)))


@_log_softmax.array_grad
def _(ctx, g):
    """torch's form, g − exp(y)·Σg, in one array: exp(y), scaled and subtracted from g in place."""
    xp = ctx.inputs[0].device.xp
    e = xp.exp(ctx.out_array)
    if e.ndim == 0:
        return g - e * g
    e *= _sum.forward(xp, g, (ctx.attrs["axis"],), True)  # the sum op's bits (float16 sums in float32)
    return xp.subtract(g, e, out=e)


def _softmax_dim(input, dim, name):
    if dim is None:
        dim = 0 if input.ndim in (0, 1, 3) else 1
    return normalize_dim(dim, input.ndim, name)


@autocast_op("softmax")
def softmax(input, dim=None, dtype=None):
    if dtype is not None:
        input = ew.cast(input, dtype)
    x, axis = ew._float_operand(input), _softmax_dim(input, dim, "softmax")
    return opmath(_softmax, x, axis=axis) if x.array.dtype == np.float16 else _softmax(x, axis=axis)


def safe_softmax(input, dim, dtype=None):
    """torch._safe_softmax: softmax along `dim`, with rows that are entirely -inf (fully masked) giving 0."""
    if dtype is not None:
        input = ew.cast(input, dtype)
    return _safe_softmax(ew._float_operand(input), axis=normalize_dim(dim, input.ndim, "safe_softmax"))


@autocast_op("log_softmax")
def log_softmax(input, dim=None, dtype=None):
    if dtype is not None:
        input = ew.cast(input, dtype)
    x, axis = ew._float_operand(input), _softmax_dim(input, dim, "log_softmax")
    return opmath(_log_softmax, x, axis=axis) if x.array.dtype == np.float16 else _log_softmax(x, axis=axis)
