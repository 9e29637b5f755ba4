"""A custom autograd op, dg.autograd.Function: a safe exp, gradient-checked, then trained with.

Poisson regression predicts counts as mu = exp(x·w + b). One bad initialization (b = 100) and plain
exp overflows float32 (exp(100) > 3.4e38): the loss is inf and every gradient NaN. `SafeExp` keeps
the forward finite by clipping the exponent at `max_log`, and keeps learning alive beyond the clip
with a straight-through backward: d mu/d x = mu (exact where x < max_log, a pull-back estimate
where it saturates, instead of the true 0 that would freeze a saturated unit forever).

    python examples/custom_function.py            # ~1 s: gradcheck, then 600 Adam steps from b = 100
"""

import argparse

import numpy as np

import distgraph as dg
import distgraph.nn as nn

TRUE_W, TRUE_B = np.array([0.5, -0.3, 0.8]), 1.0
MAX_LOG = 20.0  # exp(20) ~ 5e8: far above any count here, far below float32's limit


class SafeExp(dg.autograd.Function):
    """exp(min(x, max_log)) with a straight-through gradient beyond the clip."""

    @staticmethod
    def forward(ctx, x, max_log):
        out = x.clamp(max=max_log).exp()
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return grad * out, None  # no gradient for max_log


def check_gradients():
    """gradcheck where SafeExp is the true exp, and the straight-through value where it saturates."""
    x = dg.tensor(np.linspace(-3.0, 4.0, 8), requires_grad=True)  # float64, inside the clip
    exact = dg.autograd.gradcheck(lambda t: SafeExp.apply(t, 5.0), (x,))
    beyond = dg.tensor([10.0], requires_grad=True)
    (g,) = dg.autograd.grad(SafeExp.apply(beyond, 5.0).sum(), [beyond])
    return exact and bool(np.isclose(g.item(), np.exp(5.0)))


def poisson_data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3))
    y = rng.poisson(np.exp(x @ TRUE_W + TRUE_B))
    return dg.tensor(x.astype(np.float32)), dg.tensor(y.astype(np.float32)[:, None])


def poisson_nll(eta, y, exp):
    """Poisson negative log-likelihood with log link, up to the constant log(y!): mean(mu - y·eta)."""
    return (exp(eta) - y * eta).mean()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--init-bias", type=float, default=100.0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    say = (lambda *a: None) if args.quiet else print

    gradcheck_ok = check_gradients()
    say(f"gradcheck SafeExp: {'ok' if gradcheck_ok else 'FAILED'}")

    dg.manual_seed(0)
    x, y = poisson_data(1024, seed=0)
    model = nn.Linear(3, 1)
    with dg.no_grad():
        model.bias.fill_(args.init_bias)
    with np.errstate(over="ignore"):  # the overflow is the point
        plain_loss = poisson_nll(model(x), y, dg.exp).item()
    say(f"plain exp at b={args.init_bias:g}: loss {plain_loss}")

    # beta2 = 0.9: a short memory of squared gradients, so the huge ones of the saturated start are
    # forgotten within ~10 steps of coming back into range (0.999 would keep the steps tiny for ~1000)
    optimizer = dg.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.9))
    losses = []
    for step in range(args.steps):
        loss = poisson_nll(model(x), y, lambda eta: SafeExp.apply(eta, MAX_LOG))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == args.steps - 1:
            say(f"step {step:4d}  loss {losses[-1]:.4g}")

    w, b = model.weight.detach().numpy().ravel(), model.bias.item()
    weight_error = float(np.abs(np.append(w, b) - np.append(TRUE_W, TRUE_B)).max())
    say(f"w = {np.round(w, 3)} (true {TRUE_W}), b = {b:.3f} (true {TRUE_B}); max error {weight_error:.3f}")
    return {
        "gradcheck": gradcheck_ok,
        "plain_exp_loss": plain_loss,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "weight_error": weight_error,
    }


if __name__ == "__main__":
    main()
