"""Recurrent layers as ops: one op runs a whole sequence (every step of one layer, one direction).

Composed from per-step ops, a length-L sequence costs ~15·L small ops forward and more backward, and
eager overhead, not arithmetic, dominates. `rnn_layer` instead loops over time on raw arrays (the
input projection x·W_ihᵀ of every step arrives precomputed, as `xw`, from one matmul), and its
backward is one op too, `rnn_layer_vjp`: BPTT on raw arrays. The vjp recomputes every gate from the
saved output in one batched matmul (all h_{t-1} are known), so nothing but the output is kept.

Modes and cells follow torch (gate order LSTM i, f, g, o; GRU r, z, n with b_hn inside r·(…)):
    "LSTM"      inputs xw (L, N, 4H), h0, c0, w_hh    -> (L, N, 2H): [h_t | c_t] at every step
    "GRU"       inputs xw (L, N, 3H), h0, w_hh, b_hh  -> (L, N, H)
    "RNN_TANH", "RNN_RELU"  inputs xw (L, N, H), h0, w_hh -> (L, N, H)
LSTM and RNN take b_hh folded into xw (it only adds); GRU cannot, since b_hn is scaled by r.

Second derivatives (gradient penalties, MAML) come from the vjp op's own rule, which rebuilds the
layer from the per-step cells below (`_composite`) and differentiates it twice; a third order raises.
"""

from distgraph.autograd import grad_mode
from distgraph.autograd.function import apply
from distgraph.autograd.tensor import Tensor
from distgraph.errors import AutogradError
from distgraph.ops import elementwise as ew
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
    for t in _order(len(steps), reverse):
        if mode == "LSTM":
            state = lstm_cell(steps[t], state, rest[1])
            out[t] = cat(state, -1)
        else:
            relu = mode == "RNN_RELU"
            state = gru_cell(steps[t], state, *rest) if mode == "GRU" else rnn_cell(steps[t], state, *rest, relu=relu)
            out[t] = state
    return stack(out, 0)


# ---- the fused layer ----------------------------------------------------------------------------------
def _sigmoid(xp, z):
    """1 / (1 + e^-z): exp is about twice as fast as tanh in numpy; the clip keeps e^-z finite (the
    result below z = -80 is ~1e-35 either way)."""
    e = xp.exp(-xp.maximum(z, -80))
    e += 1
    return xp.reciprocal(e, out=e)


def _order(n, reverse):
    return range(n - 1, -1, -1) if reverse else range(n)


@defop("rnn_layer", kind="other", save=(0, 1, 2, 3, 4), saves_output=True)
def _rnn_layer(xp, xw, h0, *rest, mode, reverse):
    steps, n, width = xw.shape
    hidden = h0.shape[-1]
    out = xp.empty((steps, n, 2 * hidden if mode == "LSTM" else hidden), dtype=xw.dtype)
    h = h0
    if mode == "LSTM":
        c, w = rest
        wt = w.T
        for t in _order(steps, reverse):
            z = xw[t] + h @ wt
            s = _sigmoid(xp, z)
            c = s[:, hidden : 2 * hidden] * c + s[:, :hidden] * xp.tanh(z[:, 2 * hidden : 3 * hidden])
            h = s[:, 3 * hidden :] * xp.tanh(c)
            out[t, :, :hidden], out[t, :, hidden:] = h, c
    elif mode == "GRU":
        w, b = rest
        wt = w.T
        for t in _order(steps, reverse):
            hw = h @ wt + b
            rz = _sigmoid(xp, xw[t, :, : 2 * hidden] + hw[:, : 2 * hidden])
            r, z = rz[:, :hidden], rz[:, hidden:]
            new = xp.tanh(xw[t, :, 2 * hidden :] + r * hw[:, 2 * hidden :])
            h = out[t] = new + z * (h - new)
    else:
        wt = rest[0].T
        for t in _order(steps, reverse):
            pre = xw[t] + h @ wt
            h = out[t] = xp.maximum(pre, 0) if mode == "RNN_RELU" else xp.tanh(pre)
    return out


@_rnn_layer.grad
def _(ctx, g):
    ins = ctx.inputs
    packed = apply(_rnn_layer_vjp, (g, ctx.out, *ins), ctx.attrs)
    grads, start = [], 0
    for t in ins:
        grads.append(reshape(narrow(packed, 0, start, t.array.size), tuple(t.shape)))
        start += t.array.size
    return tuple(grads)


def _previous(xp, seq, h0, reverse):
    """h_{t-1} for every t in processing order: the output shifted by one step, h0 first."""
    prev = xp.empty_like(seq)
    if reverse:
        prev[-1], prev[:-1] = h0, seq[1:]
    else:
        prev[0], prev[1:] = h0, seq[:-1]
    return prev


@defop("rnn_layer_vjp", kind="other", save=(0, 1, 2, 3, 4, 5, 6))
def _rnn_layer_vjp(xp, gy, y, xw, h0, *rest, mode, reverse):
    """BPTT: gradients of <gy, rnn_layer(xw, h0, *rest)> packed flat in input order."""
    steps, n, width = xw.shape
    hid = h0.shape[-1]
    dxw = xp.empty_like(xw)
    dh = xp.zeros_like(h0)
    if mode == "LSTM":
        c0, w = rest
        hs, cs = y[..., :hid], y[..., hid:]
        hprev, cprev = _previous(xp, hs, h0, reverse), _previous(xp, cs, c0, reverse)
        z = xw + (hprev.reshape(-1, hid) @ w.T).reshape(xw.shape)  # every step's gates in one matmul
        s = _sigmoid(xp, z)
        i, f, o = s[..., :hid], s[..., hid : 2 * hid], s[..., 3 * hid :]
        gg, tc = xp.tanh(z[..., 2 * hid : 3 * hid]), xp.tanh(cs)
        # everything that does not depend on the recursion, for all steps at once: d gate_pre / d c_t
        to_ifg = xp.stack([gg * i * (1 - i), cprev * f * (1 - f), i * (1 - gg * gg)], axis=2)  # (L, N, 3, H)
        h_to_c, h_to_o = o * (1 - tc * tc), tc * o * (1 - o)
        gates = dxw.reshape(steps, n, 4, hid)
        dc = xp.zeros_like(c0)
        for t in _order(steps, not reverse):
            dh = gy[t, :, :hid] + dh
            dc = gy[t, :, hid:] + dc + dh * h_to_c[t]
            gates[t, :, :3] = dc[:, None] * to_ifg[t]
            gates[t, :, 3] = dh * h_to_o[t]
            dc = dc * f[t]
            dh = dxw[t] @ w
        dw = dxw.reshape(-1, width).T @ hprev.reshape(-1, hid)
        parts = (dxw, dh, dc, dw)
    elif mode == "GRU":
        w, b = rest
        hprev = _previous(xp, y, h0, reverse)
        hw = (hprev.reshape(-1, hid) @ w.T).reshape(xw.shape) + b
        rz = _sigmoid(xp, xw[..., : 2 * hid] + hw[..., : 2 * hid])
        new = xp.tanh(xw[..., 2 * hid :] + rz[..., :hid] * hw[..., 2 * hid :])
        dhw = xp.empty_like(hw)
        for t in _order(steps, not reverse):
            r, z, nt = rz[t, :, :hid], rz[t, :, hid:], new[t]
            dh = gy[t] + dh
            dn = dh * (1 - z) * (1 - nt * nt)
            dxw[t, :, :hid] = dhw[t, :, :hid] = dn * hw[t, :, 2 * hid :] * r * (1 - r)
            dxw[t, :, hid : 2 * hid] = dhw[t, :, hid : 2 * hid] = dh * (hprev[t] - nt) * z * (1 - z)
            dxw[t, :, 2 * hid :] = dn
            dhw[t, :, 2 * hid :] = dn * r
            dh = dh * z + dhw[t] @ w
        dw = dhw.reshape(-1, width).T @ hprev.reshape(-1, hid)
        parts = (dxw, dh, dw, dhw.sum(axis=(0, 1)))
    else:
        (w,) = rest
        slope = (y > 0).astype(y.dtype) if mode == "RNN_RELU" else 1 - y * y
        for t in _order(steps, not reverse):
            dxw[t] = (gy[t] + dh) * slope[t]
            dh = dxw[t] @ w
        dw = dxw.reshape(-1, width).T @ _previous(xp, y, h0, reverse).reshape(-1, hid)
        parts = (dxw, dh, dw)
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
    return apply(_rnn_layer, (xw, h0, *rest), {"mode": mode, "reverse": reverse})
