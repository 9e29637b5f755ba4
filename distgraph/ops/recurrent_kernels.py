"""The array kernels of `ops.recurrent`: one layer's recurrence (forward) and its BPTT (backward) on raw
arrays, for every mode (see that module's docstring for the inputs and the output).

What they do to be quick (the per-step matmuls dominate, so most of it is about them):
  - the recurrent weight is multiplied as a C-contiguous copy of W_hhᵀ (h·W_hhᵀ through the transposed
    view is ~1.5x slower in OpenBLAS at these sizes), into one preallocated gate buffer;
  - gate activations are computed in place, each nonlinearity only on its own gates, sigmoid as
    ½·tanh(½z) + ½ (tanh is cheaper than exp, and cannot overflow);
  - the LSTM forward writes h_t and c_t straight into the output;
  - with `keep`, the forward also returns what the backward reads besides the output, as torch keeps
    it: the LSTM's activated gates i, f, g, o (L, N, 4H), the GRU's r, z, n (L, N, 3H) and W_hn·h_{t-1}
    + b_hn (L, N, H); the RNN's backward needs only the output (saved: None). The gates are computed in
    the buffer that keeps them, so the backward reads the very numbers the forward used;
  - given none (`saved=None`: the vjp op, and a layer run without `keep`), the backward recomputes every
    gate from the output with one batched matmul (all h_{t-1} are known); either way it precomputes
    everything that does not depend on the recursion for all steps at once, and leaves only the
    recursion itself in the time loop, where the LSTM's dh and dc are two arrays updated in place (each
    step's product written into dh), not fresh ones per step.
"""


def order(n, reverse):
    return range(n - 1, -1, -1) if reverse else range(n)


def sigmoid_(xp, a):
    """sigmoid(a), in place: ½·tanh(½a) + ½ (the scalings by ½ are exact)."""
    a *= 0.5
    xp.tanh(a, out=a)
    a *= 0.5
    a += 0.5
    return a


def previous(xp, seq, h0, reverse):
    """h_{t-1} for every t in processing order: the output shifted by one step, h0 first."""
    prev = xp.empty_like(seq)
    if reverse:
        prev[-1], prev[:-1] = h0, seq[1:]
    else:
        prev[0], prev[1:] = h0, seq[:-1]
    return prev


def _lstm_consts(xp, hid, dtype):
    """(half, off) over the 4H gates: ½ for the sigmoid gates i, f, o and 1 for g, then ½ and 0."""
    half = xp.full(4 * hid, 0.5, dtype=dtype)
    half[2 * hid : 3 * hid] = 1
    off = xp.full(4 * hid, 0.5, dtype=dtype)
    off[2 * hid : 3 * hid] = 0
    return half, off


def _lstm_acts_(xp, z, consts):
    """LSTM pre-activations (..., 4H) -> i, f, g, o activations, in place: tanh(g), and the others'
    sigmoid as ½·tanh(½z) + ½, all four in whole-row passes (strided gate slices are ~2x slower)."""
    half, off = consts
    z *= half
    xp.tanh(z, out=z)
    z *= half
    z += off
    return z


def forward(xp, xw, h0, rest, mode, reverse, keep=False):
    """The layer's output; with `keep`, (output, saved) where saved is what `backward` reads besides it."""
    steps, n, width = xw.shape
    hid = h0.shape[-1]
    out = xp.empty((steps, n, 2 * hid if mode == "LSTM" else hid), dtype=xw.dtype)
    w = rest[1] if mode == "LSTM" else rest[0]
    wt = xp.ascontiguousarray(w.T)
    acts = xp.empty_like(xw) if keep and mode in ("LSTM", "GRU") else None  # every step's gates
    scratch = xp.empty((n, width), dtype=xw.dtype) if acts is None else None
    saved = acts
    h = h0
    if mode == "LSTM":
        c = rest[0]
        consts = _lstm_consts(xp, hid, xw.dtype)
        ig = xp.empty_like(h0)
        for t in order(steps, reverse):
            z = scratch if acts is None else acts[t]
            xp.matmul(h, wt, out=z)
            z += xw[t]
            _lstm_acts_(xp, z, consts)
            i, f, g, o = z[:, :hid], z[:, hid : 2 * hid], z[:, 2 * hid : 3 * hid], z[:, 3 * hid :]
            hs, cs = out[t, :, :hid], out[t, :, hid:]
            xp.multiply(f, c, out=cs)
            cs += xp.multiply(i, g, out=ig)
            xp.tanh(cs, out=hs)
            hs *= o
            h, c = hs, cs
    elif mode == "GRU":
        b = rest[1]
        hns = None if acts is None else xp.empty((steps, n, hid), dtype=xw.dtype)
        saved = None if acts is None else (acts, hns)
        for t in order(steps, reverse):
            z = scratch if acts is None else acts[t]
            rz, hn = z[:, : 2 * hid], z[:, 2 * hid :]
            r, u = z[:, :hid], z[:, hid : 2 * hid]
            xp.matmul(h, wt, out=z)
            z += b
            rz += xw[t, :, : 2 * hid]
            sigmoid_(xp, rz)
            if hns is not None:
                hns[t] = hn  # W_hn·h_{t-1} + b_hn, before r scales it
            hn *= r
            hn += xw[t, :, 2 * hid :]
            xp.tanh(hn, out=hn)  # n_t
            ht = out[t]
            xp.subtract(h, hn, out=ht)  # n + z·(h − n)
            ht *= u
            ht += hn
            h = ht
    else:
        relu = mode == "RNN_RELU"
        for t in order(steps, reverse):
            ht = out[t]
            xp.matmul(h, wt, out=ht)
            ht += xw[t]
            if relu:
                xp.maximum(ht, 0, out=ht)
            else:
                xp.tanh(ht, out=ht)
            h = ht
    return (out, saved) if keep else out


def backward(xp, gy, y, xw, h0, rest, mode, reverse, saved=None):
    """BPTT: the gradients of <gy, layer(xw, h0, *rest)>, one array per input, in input order; `saved`:
    what `forward(..., keep=True)` kept (None: the gates are recomputed)."""
    steps, n, width = xw.shape
    hid = h0.shape[-1]
    w = rest[1] if mode == "LSTM" else rest[0]
    back = order(steps, not reverse)
    if mode == "LSTM":
        return _lstm_backward(xp, gy, y, xw, h0, rest[0], w, reverse, saved)
    hprev = previous(xp, y, h0, reverse)
    hp2 = hprev.reshape(-1, hid)
    dh = xp.zeros_like(h0)
    if mode == "GRU":
        if saved is None:
            saved = _gru_gates(xp, hp2, xw, w, rest[1])
        acts, hn = saved
        r, u, new = acts[..., :hid], acts[..., hid : 2 * hid], acts[..., 2 * hid :]
        # the step-independent factors, for all steps at once (dn = dh·a_n; dr = dn·a_r; dz = dh·a_z)
        a_n = 1 - new * new
        a_n *= 1 - u
        a_r = hn * r
        a_r *= 1 - r
        a_z = hprev - new
        a_z *= u
        a_z *= 1 - u
        dxw = xp.empty_like(xw)
        dhw = xp.empty_like(xw)
        for t in back:
            dh = gy[t] + dh
            dn = xp.multiply(dh, a_n[t], out=dxw[t, :, 2 * hid :])
            xp.multiply(dn, a_r[t], out=dhw[t, :, :hid])
            xp.multiply(dh, a_z[t], out=dhw[t, :, hid : 2 * hid])
            xp.multiply(dn, r[t], out=dhw[t, :, 2 * hid :])
            dh *= u[t]
            dh += dhw[t] @ w
        dxw[..., : 2 * hid] = dhw[..., : 2 * hid]
        d2 = dhw.reshape(-1, width)
        return dxw, dh, d2.T @ hp2, d2.sum(axis=0)
    dxw = xp.empty_like(xw)
    slope = (y > 0).astype(y.dtype) if mode == "RNN_RELU" else 1 - y * y
    for t in back:
        d = dxw[t]
        xp.add(gy[t], dh, out=d)
        d *= slope[t]
        dh = d @ w
    return dxw, dh, dxw.reshape(-1, width).T @ hp2


def _gru_gates(xp, hp2, xw, w, b):
    """What the GRU forward keeps, recomputed: (r, z, n) every step, and W_hn·h_{t-1} + b_hn."""
    hid = hp2.shape[-1]
    hw = (hp2 @ xp.ascontiguousarray(w.T)).reshape(xw.shape)  # every step's W_hh·h_{t-1} in one matmul
    hw += b
    acts = xp.empty_like(xw)
    rz = xp.add(xw[..., : 2 * hid], hw[..., : 2 * hid], out=acts[..., : 2 * hid])
    sigmoid_(xp, rz)
    hn = hw[..., 2 * hid :]
    new = xp.multiply(acts[..., :hid], hn, out=acts[..., 2 * hid :])
    new += xw[..., 2 * hid :]
    xp.tanh(new, out=new)
    return acts, hn


def blocks(steps, size, reverse):
    """[start, stop) runs of at most `size` steps covering range(steps), in BPTT's order (last first
    unless `reverse`)."""
    starts = range(0, steps, size)
    runs = [(s, min(s + size, steps)) for s in starts]
    return runs if reverse else runs[::-1]


def block_size(n, width):
    """Steps per block of the backward's batched work: ~256K gate values, so a block's gates and
    coefficients stay in cache between their passes while its matmul is still big enough to be quick."""
    return max(1, (1 << 18) // max(1, n * width))


def _lstm_backward(xp, gy, y, xw, h0, c0, w, reverse, acts):
    steps, n, width = xw.shape
    hid = h0.shape[-1]
    hprev = previous(xp, y[..., :hid], h0, reverse)
    cprev = previous(xp, y[..., hid:], c0, reverse)
    hp2 = hprev.reshape(-1, hid)
    size = block_size(n, width)
    if acts is None:  # the gates are recomputed a block at a time, into zb
        wt, consts = xp.ascontiguousarray(w.T), _lstm_consts(xp, hid, xw.dtype)
        zb = xp.empty((size, n, width), dtype=xw.dtype)
    # the step-independent factors of a block: d pre_{i,f,g} / d c_t (packed (·, N, 3, H), so one product
    # per step writes all three), d pre_o / d h_t and d c_t / d h_t
    ifgb = xp.empty((size, n, 3, hid), dtype=xw.dtype)
    hob = xp.empty((size, n, hid), dtype=xw.dtype)
    hcb = xp.empty((size, n, hid), dtype=xw.dtype)
    dxw = xp.empty_like(xw)
    gates = dxw.reshape(steps, n, 4, hid)
    dh = xp.zeros_like(h0)
    dc = xp.zeros_like(c0)
    tmp = xp.empty_like(dc)
    for s, e in blocks(steps, size, reverse):
        m = e - s
        if acts is None:  # the block's gates, recomputed
            z = zb[:m]
            xp.matmul(hp2[s * n : e * n], wt, out=z.reshape(m * n, width))
            z += xw[s:e]
            _lstm_acts_(xp, z, consts)
        else:
            z = acts[s:e]
        i, f, g, o = z[..., :hid], z[..., hid : 2 * hid], z[..., 2 * hid : 3 * hid], z[..., 3 * hid :]
        ifg, h_to_o, h_to_c = ifgb[:m], hob[:m], hcb[:m]
        k = xp.subtract(1, i, out=ifg[:, :, 0])
        k *= i
        k *= g
        k = xp.subtract(1, f, out=ifg[:, :, 1])
        k *= f
        k *= cprev[s:e]
        k = xp.multiply(g, g, out=ifg[:, :, 2])
        xp.subtract(1, k, out=k)
        k *= i
        tc = xp.tanh(y[s:e, :, hid:], out=h_to_c)
        xp.subtract(1, o, out=h_to_o)
        h_to_o *= o
        h_to_o *= tc
        tc *= tc
        xp.subtract(1, tc, out=h_to_c)
        h_to_c *= o
        for j in order(m, not reverse):
            t = s + j
            dh += gy[t, :, :hid]
            dc += gy[t, :, hid:]
            dc += xp.multiply(dh, h_to_c[j], out=tmp)
            xp.multiply(dc[:, None], ifg[j], out=gates[t, :, :3])
            xp.multiply(dh, h_to_o[j], out=gates[t, :, 3])
            dc *= f[j]
            xp.matmul(dxw[t], w, out=dh)
    return dxw, dh, dc, dxw.reshape(-1, width).T @ hp2
