"""The update math of every optimizer, on plain arrays (numpy or cupy), in place.

This is the one place an update rule is written: the `Optimizer` classes call these functions on
their parameters' arrays, and the distributed parameter store calls them on the arrays it owns, so
both give the same bits. Each function follows torch's single-tensor implementation step by step
(same operation order) and keeps its state under torch's key names in the per-parameter `state` dict,
creating it on first use.
"""

import math

from distgraph.backend import device_of_array


def _xp(a):
    return device_of_array(a).xp


def _prepare_grad(param, grad, weight_decay, maximize):
    g = -grad if maximize else grad
    if weight_decay:
        g = g + weight_decay * param
    return g


def sgd_update(
    param, grad, state, *, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False
):
    d_p = _prepare_grad(param, grad, weight_decay, maximize)
    if momentum:
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = d_p.copy()
        else:
            buf *= momentum
            buf += (1 - dampening) * d_p
        d_p = d_p + momentum * buf if nesterov else buf
    param -= lr * d_p


def adam_update(
    param,
    grad,
    state,
    *,
    lr,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0.0,
    amsgrad=False,
    maximize=False,
    decoupled_weight_decay=False,
):
    xp = _xp(param)
    beta1, beta2 = betas
    if not state:
        state["step"] = 0
        state["exp_avg"] = xp.zeros_like(param)
        state["exp_avg_sq"] = xp.zeros_like(param)
        if amsgrad:
            state["max_exp_avg_sq"] = xp.zeros_like(param)
    g = -grad if maximize else grad
    if weight_decay:
        if decoupled_weight_decay:
            param *= 1 - lr * weight_decay
        else:
            g = g + weight_decay * param
    state["step"] += 1
    step = state["step"]
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    exp_avg += (1 - beta1) * (g - exp_avg)  # lerp(exp_avg, g, 1 - beta1), torch's weight < 0.5 branch
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * (g * g)
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = math.sqrt(1 - beta2**step)
    step_size = lr / bias_correction1
    if amsgrad:
        xp.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
        denom = xp.sqrt(state["max_exp_avg_sq"]) / bias_correction2_sqrt
    else:
        denom = xp.sqrt(exp_avg_sq) / bias_correction2_sqrt
    denom += eps
    param -= step_size * (exp_avg / denom)


def adamw_update(
    param, grad, state, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False
):
    adam_update(
        param, grad, state, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
        maximize=maximize, decoupled_weight_decay=True,
    )  # fmt: skip


def rmsprop_update(
    param, grad, state, *, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False
):
    xp = _xp(param)
    if not state:
        state["step"] = 0
        state["square_avg"] = xp.zeros_like(param)
        if momentum > 0:
            state["momentum_buffer"] = xp.zeros_like(param)
        if centered:
            state["grad_avg"] = xp.zeros_like(param)
    state["step"] += 1
    g = _prepare_grad(param, grad, weight_decay, maximize)
    square_avg = state["square_avg"]
    square_avg *= alpha
    square_avg += (1 - alpha) * (g * g)
    if centered:
        grad_avg = state["grad_avg"]
        grad_avg += (1 - alpha) * (g - grad_avg)
        avg = xp.sqrt(square_avg - grad_avg * grad_avg)
    else:
        avg = xp.sqrt(square_avg)
    avg += eps
    if momentum > 0:
        buf = state["momentum_buffer"]
        buf *= momentum
        buf += g / avg
        param -= lr * buf
    else:
        param -= lr * (g / avg)


def adagrad_update(
    param, grad, state, *, lr, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10, maximize=False
):
    xp = _xp(param)
    if not state:
        state["step"] = 0
        state["sum"] = xp.full_like(param, initial_accumulator_value)
    state["step"] += 1
    g = _prepare_grad(param, grad, weight_decay, maximize)
    clr = lr / (1 + (state["step"] - 1) * lr_decay)
    state["sum"] += g * g
    std = xp.sqrt(state["sum"])
    std += eps
    param -= clr * (g / std)


UPDATES = {
    "sgd": sgd_update,
    "adam": adam_update,
    "adamw": adamw_update,
    "rmsprop": rmsprop_update,
    "adagrad": adagrad_update,
}


def make_optimizer_spec(optimizer):
    """(update name, [hyperparameters per param group]) — what a remote store needs to rebuild the update."""
    groups = [
        {k: v for k, v in g.items() if k != "params" and k in optimizer.hyperparameters} for g in optimizer.param_groups
    ]
    return optimizer.update_name, groups
