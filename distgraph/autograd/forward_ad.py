"""torch.autograd.forward_ad's names, so that a script using them fails saying why and what to use instead:
distgraph has no forward-mode AD. J·v comes from `dg.func.jvp` or `dg.autograd.functional.jvp`, which
compute it by double backward (the same values)."""

_WHY = (
    "distgraph has no forward-mode AD (torch.autograd.forward_ad); compute Jacobian-vector products with "
    "dg.func.jvp(f, primals, tangents) or dg.autograd.functional.jvp, which give the same values by double backward"
)


def _unsupported(*args, **kwargs):
    raise NotImplementedError(_WHY)


dual_level = make_dual = unpack_dual = enter_dual_level = exit_dual_level = _unsupported
