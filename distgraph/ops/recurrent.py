"""Recurrent layers as ops: one op runs a whole sequence (every step of one layer, one direction).

Composed from per-step ops, a length-L sequence costs ~15·L small ops forward and more backward, and
eager overhead, not arithmetic, dominates. `rnn_layer` instead loops over time on raw arrays (the
input projection x·W_ihᵀ of every step arrives precomputed, as `xw`, from one matmul), and its
backward is one op too, `rnn_layer_vjp`: BPTT on raw arrays. Where no graph of the backward is wanted,
the layer's array rule runs the same BPTT kernel and hands its gradients over as they are (no packing,
no vjp node). The kernels live in ops/recurrent_kernels.py.

What the backward keeps, as torch: where eager autograd records the layer (grad enabled, an input that
needs it, no tracer), it runs as `rnn_layer_saving`, which also keeps its activated gates (`saves_extra`:
the LSTM's i, f, g, o; the GRU's r, z, n and W_hn·h + b_hn; 4H values a step either way, the cell states
being in the output), and its array rule reads them instead of recomputing them. Otherwise it runs as
`rnn_layer`, which keeps nothing: no extra memory under no_grad, and a captured graph (capture makes a
`saves_extra` op's gradient an opaque vjp node that reruns the forward per input) records `rnn_layer` and
its differentiable rule as before. That rule, and the array rule given no gates, recompute every gate
from the saved output with batched matmuls (all h_{t-1} are known).

Modes and cells follow torch (gate order LSTM i, f, g, o; GRU r, z, n with b_hn inside r·(…)):
    "LSTM"      inputs xw (L, N, 4H), h0, c0, w_hh    -> (L, N, 2H): [h_t | c_t] at every step
    "GRU"       inputs xw (L, N, 3H), h0, w_hh, b_hh  -> (L, N, H)
    "RNN_TANH", "RNN_RELU"  inputs xw (L, N, H), h0, w_hh -> (L, N, H)
LSTM and RNN take b_hh folded into xw (it only adds); GRU cannot, since b_hn is scaled by r.

Second derivatives (gradient penalties, MAML) come from the vjp op's own rule, which rebuilds the
layer from the per-step cells below (`_composite`) and differentiates it twice; a third order raises.
"""

from distgraph.autograd import grad_mode
from distgraph.autograd.function import apply, records
from distgraph.autograd.tensor import Tensor
from distgraph.errors import AutogradError
from distgraph.ops import elementwise as ew
from distgraph.ops import recurrent_kernels as K
from distgraph.ops.layers import linear
from distgraph.ops.registry import defop
from distgraph.ops.shape import cat, chunk, narrow, reshape, stack

GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


# ---- one step, as differentiable ops (the cells, and the reference the fused op must equal) ------------
def rnn_cell(xw, h, w_hh, b_hh=None, relu=False):
    return (ew.relu if relu else ew.tanh)(xw + linear(h, w_hh, b_hh))


def lstm_cell(xw, state, w_hh, b_hh=None):
    h, c = state
    i, f, g, o = chunk(xw + linear(h, w_hh, b_hh), 4, -1)
    c = ew.sigmoid(f) * c + ew.sigmoid(i) * ew.tanh(g)
    return ew.sigmoid(o) * ew.tanh(c), c


def gru_cell(xw, h, w_hh, b_hh=None):
    r_i, z_i, n_i = chunk(xw, 3, -1)
    r_h, z_h, n_h = chunk(linear(h, w_hh, b_hh), 3, -1)
    r, z = ew.sigmoid(r_i + r_h), ew.sigmoid(z_i + z_h)
    n = ew.tanh(n_i + r * n_h)
    return (1 - z) * n + z * h


def _composite(mode, reverse, xw, h0, *rest):
    """The layer from per-step ops: same value as `rnn_layer`, differentiable to any order."""
    steps = xw.unbind(0)
    out = [None] * len(steps)
    state = (h0, rest[0]) if mode == "LSTM" else h0
    for t in K.order(len(steps), reverse):
        if mode == "LSTM":
            state = lstm_cell(steps[t], state, rest[1])
            out[t] = cat(state, -1)
        else:
            relu = mode == "RNN_RELU"
            state = gru_cell(steps[t], state, *rest) if mode == "GRU" else rnn_cell(steps[t], state, *rest, relu=relu)
            out[t] = state
    return stack(out, 0)


# ---- the fused layer (its array kernels: ops/recurrent_kernels.py) -----------------------------------------
@defop("rnn_layer", kind="other", save=(0, 1, 2, 3, 4), saves_output=True)
def _rnn_layer(xp, xw, h0, *rest, mode, reverse):
    return K.forward(xp, xw, h0, rest, mode, reverse)


@defop("rnn_layer_saving", kind="other", save=(0, 1, 2, 3, 4), saves_output=True, saves_extra=True)
def _rnn_layer_saving(xp, xw, h0, *rest, mode, reverse):
    """`rnn_layer`, keeping its gates for the array rule: (output, gates)."""
    return K.forward(xp, xw, h0, rest, mode, reverse, keep=True)


@_rnn_layer.grad
@_rnn_layer_saving.grad
def _(ctx, g):
    ins = ctx.inputs
    packed = apply(_rnn_layer_vjp, (g, ctx.out, *ins), ctx.attrs)
    grads, start = [], 0
    for t in ins:
        grads.append(reshape(narrow(packed, 0, start, t.array.size), tuple(t.shape)))
        start += t.array.size
    return tuple(grads)


@_rnn_layer.array_grad
@_rnn_layer_saving.array_grad
def _(ctx, g):
    """The rule above on arrays: BPTT's gradients straight from the kernel, not packed into one array; from
    the gates the forward kept where it kept them (ctx.saved), else recomputing them."""
    ins = [t.array for t in ctx.inputs]
    xp = ctx.inputs[0].device.xp
    return K.backward(xp, g, ctx.out_array, ins[0], ins[1], ins[2:], **ctx.attrs, saved=ctx.saved)


@defop("rnn_layer_vjp", kind="other", save=(0, 1, 2, 3, 4, 5, 6))
def _rnn_layer_vjp(xp, gy, y, xw, h0, *rest, mode, reverse):
    """BPTT: gradients of <gy, rnn_layer(xw, h0, *rest)> packed flat in input order."""
    parts = K.backward(xp, gy, y, xw, h0, rest, mode, reverse)
    return xp.concatenate([p.reshape(-1) for p in parts])


@_rnn_layer_vjp.grad
def _(ctx, gpacked):
    """Second order: differentiate the per-step composite twice (on detached stand-ins, so the inner
    backward passes stay inside this rule); exact, but the result is not differentiable again."""
    if grad_mode.is_grad_enabled():
        raise AutogradError(
            "rnn_layer: third-order gradients through RNN/LSTM/GRU layers are not supported (a second "
            "derivative was requested with create_graph=True)"
        )
    from distgraph.autograd.engine import grad

    gy, _, *ins = ctx.inputs
    leaves = [Tensor(t.array, device=t.device, requires_grad=True) for t in (gy, *ins)]
    with grad_mode.enable_grad():
        y = _composite(ctx.attrs["mode"], ctx.attrs["reverse"], *leaves[1:])
        first = grad([y], leaves[1:], [leaves[0]], create_graph=True, allow_unused=True)
        first = [f if f is not None else ew.mul(leaf, 0.0) for f, leaf in zip(first, leaves[1:])]
        packed = cat([reshape(f, (-1,)) for f in first])
        second = grad([packed], leaves, [gpacked], allow_unused=True)
    return (second[0], None, *second[1:])


def rnn_layer(mode, xw, h0, *rest, reverse=False):
    """Run one layer, one direction: see the module docstring for the inputs and the output."""
    ins = (xw, h0, *rest)
    return apply(_rnn_layer_saving if records(ins) else _rnn_layer, ins, {"mode": mode, "reverse": reverse})
