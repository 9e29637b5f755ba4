"""torch's layout rules for new results, so is_contiguous(), stride(), view() and reshape()'s copy-or-view
answer as torch's do. One permutation rule serves three kinds of result:

- an elementwise op's (`follow_operands`, applied to every elementwise op by `apply`): TensorIterator
  orders the dims by the operands' strides, the first operand that tells two dims apart deciding
  (reorder_dimensions); numpy's ufuncs let any operand that prefers row-major win instead, so
  `x.t() + y` is row-major in numpy and transposed in torch.
- `empty_like(self)` (preserve_format), where torch's sort, index_put, index_fill... write their result:
  self's strides when self is dense, else dense strides in self's order (infer_dense_strides), which is
  the same rule on one operand.
- `clone_preserve_strides(self)`, where the *_scatter ops write: self's own strides, gaps included (a
  sliced self gives a result no 1-d view has); an overlapping (expanded) self falls back to empty_like.

Each is a no-op (no copy, one flag read) on row-major operands, the common case.
"""


def dim_order(shape, arrays):
    """The dims of `shape`, slowest first, as TensorIterator lays out a result of `arrays` (broadcast to
    `shape`): an insertion sort where the first array whose strides differ on two dims orders them, a
    broadcast dim (stride 0) tells nothing, equal strides put the longer dim outside, and a pair no array
    orders keeps row-major order."""
    nd = len(shape)
    table = []  # per array, its stride along each dim of `shape` (0: broadcast)
    for a in arrays:
        lead, dims, st = nd - a.ndim, a.shape, a.strides
        if lead or 1 in dims:  # broadcast (a 0-d array: in every dim)
            table.append([0] * lead + [0 if n == 1 != shape[lead + i] else s for i, (n, s) in enumerate(zip(dims, st))])
        else:
            table.append(st)
    perm = list(range(nd - 1, -1, -1))  # fastest first, as TensorIterator's perm_
    for i in range(1, nd):
        d1 = i
        for d0 in range(i - 1, -1, -1):
            a, b = perm[d0], perm[d1]
            swap = 0  # 1: a goes inside b; -1: outside; 0: no array tells
            for st in table:
                s0, s1 = abs(st[a]), abs(st[b])  # (numpy's negative strides: their distances)
                if s0 and s1:
                    if s0 != s1:
                        swap = 1 if s0 > s1 else -1
                        break
                    if shape[a] > shape[b]:
                        swap = 1
                        break
            if swap > 0:
                perm[d0], perm[d1] = b, a
                d1 = d0
            elif swap < 0:
                break
    return perm[::-1]


def _laid_out(xp, result, order, copy=False):
    """`result` dense with dims `order` (slowest first): itself where it already is (unless `copy`), else a copy."""
    shape, step = result.shape, result.itemsize
    strides = [0] * len(shape)
    for d in reversed(order):
        strides[d] = step
        step *= shape[d]
    if not copy and all(n == 1 or s == t for n, s, t in zip(shape, result.strides, strides)):
        return result
    inverse = [0] * len(order)
    for i, d in enumerate(order):
        inverse[d] = i
    out = xp.empty([shape[d] for d in order], result.dtype).transpose(inverse)
    out[...] = result
    return out


def follow_operands(xp, result, arrays):
    """An elementwise op's `result` of `arrays` in TensorIterator's layout (see the module doc). `apply`
    calls it only where the first operand is not row-major: otherwise numpy's layout is torch's already,
    as it is where the result has the first operand's strides or no other operand has a dim."""
    first = arrays[0]
    if result.ndim < 2 or not result.size or result.strides == first.strides:
        return result
    if first.shape == result.shape and first.flags.f_contiguous:  # (a transpose) orders every dim itself
        return xp.asfortranarray(result)
    for other in arrays[1:]:
        if other.ndim:
            return _laid_out(xp, result, dim_order(result.shape, arrays))
    return result


def like(xp, result, self):
    """`result` (of self's shape) laid out as torch's empty_like(self) (preserve_format, module doc)."""
    if self.flags.c_contiguous or result.ndim < 2 or not result.size:
        return result
    return _laid_out(xp, result, dim_order(self.shape, (self,)))


def clone(xp, self, preserve_strides=False):
    """A copy of `self`: torch's clone (preserve_format), or with `preserve_strides` its
    clone_preserve_strides, which keeps self's strides and so the gaps between its elements (the gaps
    zero here; torch copies its storage's), but for a self with a broadcast (0-stride) dim: a clone."""
    if self.flags.c_contiguous or not self.size:
        return self.copy()
    if preserve_strides and all(s > 0 or n == 1 for n, s in zip(self.shape, self.strides)):
        span = self.itemsize + sum((n - 1) * s for n, s in zip(self.shape, self.strides))
        buf = xp.zeros(-(-span // self.itemsize), self.dtype)
        out = xp.lib.stride_tricks.as_strided(buf, self.shape, self.strides)
        out[...] = self
        return out
    return _laid_out(xp, self, dim_order(self.shape, (self,)), copy=True)
