"""The update math of every optimizer, on plain arrays (numpy or cupy), in place.

This is the one place an update rule is written: the `Optimizer` classes call these functions on
their parameters' arrays, and the distributed parameter store calls them on the arrays it owns, so
both give the same bits. Each function follows torch's single-tensor implementation step by step and
keeps its state under torch's key names in the per-parameter `state` dict, created on first use
("step" is a Python int; the rest are arrays shaped like the parameter).

The step time of small models counts, so every function writes into its state and into at most one
or two scratch arrays (`out=` and in-place ufuncs) instead of building a temporary per operator.
`grad` is never written: the caller still owns it. Every new array is made with `out=xp.empty_like(param)`,
since a ufunc on 0-d arrays would otherwise return a scalar that in-place updates cannot write to.
"""

import math

from distgraph.backend import device_of_array


def _xp(array):
    return device_of_array(array).xp


def _regularized(xp, param, grad, weight_decay, maximize):
    """torch's `(-grad if maximize else grad) + weight_decay * param`: `grad` itself when neither option
    changes it, else a new array the caller may reuse as scratch (returned with `owned=True`)."""
    if weight_decay:
        out = xp.multiply(param, weight_decay, out=xp.empty_like(param))
        return (xp.subtract(out, grad, out=out) if maximize else xp.add(out, grad, out=out)), True
    if maximize:
        return xp.negative(grad, out=xp.empty_like(param)), True
    return grad, False


def _add_scaled(y, x, alpha, scratch):
    """y += alpha * x in place (torch's `y.add_(x, alpha=alpha)`); `scratch` holds the product."""
    if alpha == 1:
        y += x
    elif alpha == -1:
        y -= x
    else:
        _xp(y).multiply(x, alpha, out=scratch)
        y += scratch


def _lerp_(start, end, weight, scratch):
    """start.lerp_(end, weight) in place, with torch's two branches (the one for weight < 0.5 is the usual)."""
    xp = _xp(start)
    diff = xp.subtract(end, start, out=scratch)
    if weight < 0.5:
        diff *= weight
        start += diff
    else:
        diff *= 1 - weight
        xp.subtract(end, diff, out=start)


def sgd_update(param, grad, state, *, lr, momentum=0, dampening=0, nesterov=False, weight_decay=0, maximize=False):
    """SGD with torch's momentum buffer (the first step copies the gradient; no dampening on it)."""
    xp = _xp(param)
    d_p, owned = _regularized(xp, param, grad, weight_decay, maximize)
    scratch = xp.empty_like(param)
    if momentum:
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = d_p.copy()
        else:
            buf *= momentum
            _add_scaled(buf, d_p, 1 - dampening, scratch)
        if nesterov:  # d_p + momentum * buf
            if not owned:
                d_p = xp.multiply(buf, momentum, out=scratch)
                d_p += grad
            else:
                _add_scaled(d_p, buf, momentum, scratch)
        else:
            d_p = buf
    _add_scaled(param, d_p, -lr, scratch)


def adam_update(
    param,
    grad,
    state,
    *,
    lr,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0,
    amsgrad=False,
    maximize=False,
    decoupled_weight_decay=False,
):
    """Adam (AdamW with `decoupled_weight_decay`): torch's bias-corrected update, optional amsgrad."""
    xp = _xp(param)
    beta1, beta2 = betas
    if "step" not in state:
        state["step"] = 0
        state["exp_avg"] = xp.zeros_like(param)
        state["exp_avg_sq"] = xp.zeros_like(param)
        if amsgrad:
            state["max_exp_avg_sq"] = xp.zeros_like(param)
    state["step"] += 1
    step = state["step"]
    if weight_decay and decoupled_weight_decay:
        param *= 1 - lr * weight_decay
        g, owned = _regularized(xp, param, grad, 0, maximize)
    else:
        g, owned = _regularized(xp, param, grad, weight_decay, maximize)
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    tmp = xp.empty_like(param)
    _lerp_(exp_avg, g, 1 - beta1, tmp)
    exp_avg_sq *= beta2  # exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    xp.multiply(g, 1 - beta2, out=tmp)
    tmp *= g
    exp_avg_sq += tmp
    if amsgrad:
        second = state.get("max_exp_avg_sq")
        if second is None:  # amsgrad switched on after the state was made
            second = state["max_exp_avg_sq"] = exp_avg_sq.copy()
        xp.maximum(second, exp_avg_sq, out=second)
    else:
        second = exp_avg_sq
    step_size = lr / (1 - beta1**step)
    denom = xp.sqrt(second, out=tmp)
    denom /= math.sqrt(1 - beta2**step)
    denom += eps
    ratio = xp.divide(exp_avg, denom, out=g if owned else tmp)
    ratio *= step_size
    param -= ratio


def adamw_update(param, grad, state, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 maximize=False):  # fmt: skip
    """AdamW: Adam whose weight decay shrinks the parameter directly instead of joining the gradient."""
    adam_update(param, grad, state, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                maximize=maximize, decoupled_weight_decay=True)  # fmt: skip


def rmsprop_update(param, grad, state, *, lr, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                   maximize=False):  # fmt: skip
    """RMSprop: divide by a running RMS of the gradient (centered: of its deviation from its mean)."""
    xp = _xp(param)
    if "step" not in state:
        state["step"] = 0
        state["square_avg"] = xp.zeros_like(param)
        if momentum > 0:
            state["momentum_buffer"] = xp.zeros_like(param)
        if centered:
            state["grad_avg"] = xp.zeros_like(param)
    state["step"] += 1
    g, _ = _regularized(xp, param, grad, weight_decay, maximize)
    square_avg = state["square_avg"]
    square_avg *= alpha  # square_avg.mul_(alpha).addcmul_(g, g, value=1 - alpha)
    avg = xp.multiply(g, 1 - alpha, out=xp.empty_like(param))
    avg *= g
    square_avg += avg
    if centered:
        grad_avg = state["grad_avg"]
        _lerp_(grad_avg, g, 1 - alpha, avg)
        xp.multiply(grad_avg, grad_avg, out=avg)
        xp.subtract(square_avg, avg, out=avg)
        xp.sqrt(avg, out=avg)
    else:
        xp.sqrt(square_avg, out=avg)
    avg += eps
    if momentum > 0:
        buf = state["momentum_buffer"]
        buf *= momentum  # buf.mul_(momentum).addcdiv_(g, avg)
        buf += xp.divide(g, avg, out=avg)
        _add_scaled(param, buf, -lr, avg)
    else:
        ratio = xp.divide(g, avg, out=avg)
        ratio *= lr
        param -= ratio


def adagrad_update(param, grad, state, *, lr, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                   maximize=False):  # fmt: skip
    """Adagrad: divide by the root of the summed squared gradients; the step size decays as 1/(1 + t·lr_decay)."""
    xp = _xp(param)
    if "step" not in state:
        state["step"] = 0
        state["sum"] = xp.full_like(param, initial_accumulator_value)
    state["step"] += 1
    g, _ = _regularized(xp, param, grad, weight_decay, maximize)
    clr = lr / (1 + (state["step"] - 1) * lr_decay)
    tmp = xp.multiply(g, g, out=xp.empty_like(param))
    state["sum"] += tmp
    std = xp.sqrt(state["sum"], out=tmp)
    std += eps
    ratio = xp.divide(g, std, out=tmp)
    ratio *= clr
    param -= ratio


UPDATES = {
    "sgd": sgd_update,
    "adam": adam_update,
    "adamw": adamw_update,
    "rmsprop": rmsprop_update,
    "adagrad": adagrad_update,
}


def make_optimizer_spec(optimizer):
    """(update name, [hyperparameters of each param group]): what a remote store needs to run the same
    update as `optimizer` (a key of `UPDATES` and the keyword arguments of that function)."""
    return optimizer.update_name, [
        {k: g[k] for k in optimizer.hyperparameters if k in g} for g in optimizer.param_groups
    ]
