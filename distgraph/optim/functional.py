"""The update math of every optimizer, on plain arrays (numpy or cupy), in place.

This is the one place an update rule is written: the `Optimizer` classes call these functions on
their parameters' arrays, and the distributed parameter store calls them on the arrays it owns, so
both give the same bits. Each function follows torch's single-tensor implementation step by step and
keeps its state under torch's key names in the per-parameter `state` dict, created on first use
("step" is a Python int, NAdam's mu_product and ASGD's eta and mu are Python floats — `_scalar`; the rest
are arrays shaped like the parameter, so an update on a slice of the parameter is that slice of the update).

The step time of small models counts, so every function writes into its state and into at most one
or two scratch arrays (`out=` and in-place ufuncs) instead of building a temporary per operator; on
large host arrays each runs one cache-sized block at a time (`blocked.in_blocks`: same bits, less
memory traffic).
`grad` is never written: the caller still owns it. Every new array is made with `out=xp.empty_like(param)`,
since a ufunc on 0-d arrays would otherwise return a scalar that in-place updates cannot write to.
cupy allocates and runs on its current GPU, whatever GPU the parameter is on: each update runs inside
`backend.on` its parameter's device (`_elsewhere`, after one type test: all a numpy parameter pays).
"""

import math

import numpy as np

from distgraph import dtypes
from distgraph.backend import cuda_current_device, device_of_array, on
from distgraph.optim.blocked import in_blocks


def _xp(array):
    return device_of_array(array).xp


def _elsewhere(param):
    """Whether `param` is a cupy array on another GPU than cupy's current one (where cupy would allocate and
    run): the update then runs again inside `backend.on` its GPU (`_on_its_gpu`). A numpy one never is."""
    return not isinstance(param, np.ndarray) and param.device.id != cuda_current_device()


def _on_its_gpu(update, args):
    """`update` called with `args` (its locals on entry: its arguments) on its parameter's GPU."""
    with on(device_of_array(args["param"])):
        return update(**args)


def _regularized(xp, param, grad, weight_decay, maximize):
    """torch's `(-grad if maximize else grad) + weight_decay * param`: `grad` itself when neither option
    changes it, else a new array the caller may reuse as scratch (returned with `owned=True`)."""
    if weight_decay:
        out = xp.multiply(param, weight_decay, out=xp.empty_like(param))
        return (xp.subtract(out, grad, out=out) if maximize else xp.add(out, grad, out=out)), True
    if maximize:
        return xp.negative(grad, out=xp.empty_like(param)), True
    return grad, False


def _decayed(xp, param, grad, lr, weight_decay, decoupled, maximize):
    """The Adam family's weight decay: decoupled (AdamW's), the parameter shrinks by lr·weight_decay before
    the update and the gradient is left alone; else it joins the gradient as in `_regularized`."""
    if weight_decay and decoupled:
        param *= 1 - lr * weight_decay
        return _regularized(xp, param, grad, 0, maximize)
    return _regularized(xp, param, grad, weight_decay, maximize)


def _scalar(value):
    """`value` as torch holds a scalar state entry (NAdam's mu_product, ASGD's eta and mu): a 0-d tensor
    of its "scalar dtype", float64 only when the default dtype is float64, else float32. Kept here as
    a Python float rounded the same way, so the updates that read it give torch's bits. The default dtype
    is this process's: a Ray worker has its own (float32 unless something there sets it)."""
    return float(value) if dtypes.get_default_dtype() is dtypes.float64 else float(np.float32(value))


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


@in_blocks
def sgd_update(param, grad, state, *, lr, momentum=0, dampening=0, nesterov=False, weight_decay=0, maximize=False):
    """SGD with torch's momentum buffer (the first step copies the gradient; no dampening on it)."""
    if type(param) is not np.ndarray and _elsewhere(param):  # (first: locals() are the arguments)
        return _on_its_gpu(sgd_update, locals())
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


@in_blocks
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
    if type(param) is not np.ndarray and _elsewhere(param):  # (first: locals() are the arguments)
        return _on_its_gpu(adam_update, locals())
    xp = _xp(param)
    beta1, beta2 = betas
    step = _stepped(xp, param, state, ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ()))
    g, owned = _decayed(xp, param, grad, lr, weight_decay, decoupled_weight_decay, maximize)
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    tmp = xp.empty_like(param)
    _moments(exp_avg, exp_avg_sq, g, beta1, beta2, tmp)
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


def _moments(exp_avg, exp_avg_sq, g, beta1, beta2, tmp):
    """The Adam family's running moments: exp_avg.lerp_(g, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(g, g,
    value=1 - beta2)."""
    _lerp_(exp_avg, g, 1 - beta1, tmp)
    exp_avg_sq *= beta2
    _xp(g).multiply(g, 1 - beta2, out=tmp)
    tmp *= g
    exp_avg_sq += tmp


def _stepped(xp, param, state, keys=("exp_avg", "exp_avg_sq")):
    """Count a step → its number; on first use the state starts at step 0 with zero arrays under `keys`."""
    if "step" not in state:
        state["step"] = 0
        for key in keys:
            state[key] = xp.zeros_like(param)
    state["step"] += 1
    return state["step"]


@in_blocks
def nadam_update(param, grad, state, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
                 decoupled_weight_decay=False, maximize=False):  # fmt: skip
    """NAdam: Adam with Nesterov momentum whose coefficient mu_t warms up (momentum_decay); the product of
    the mu's so far is state ("mu_product", a torch scalar: `_scalar`)."""
    if type(param) is not np.ndarray and _elsewhere(param):  # (first: locals() are the arguments)
        return _on_its_gpu(nadam_update, locals())
    xp = _xp(param)
    beta1, beta2 = betas
    if "step" not in state:
        state["mu_product"] = 1.0
    step = _stepped(xp, param, state)
    bias_correction2 = 1 - beta2**step
    g, owned = _decayed(xp, param, grad, lr, weight_decay, decoupled_weight_decay, maximize)
    grad_value, avg_value, state["mu_product"] = nadam_scalars(lr, beta1, momentum_decay, step, state["mu_product"])
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    denom = xp.empty_like(param)
    _moments(exp_avg, exp_avg_sq, g, beta1, beta2, denom)
    xp.divide(exp_avg_sq, bias_correction2, out=denom)
    xp.sqrt(denom, out=denom)
    denom += eps
    work = g if owned else xp.empty_like(param)
    for x, value in ((g, grad_value), (exp_avg, avg_value)):
        xp.multiply(x, value, out=work)  # param.addcdiv_(x, denom, value=value)
        work /= denom
        param += work


def nadam_scalars(lr, beta1, momentum_decay, step, mu_product):
    """NAdam's host-side numbers for step `step` (1, 2, ...), given the mu_product of the steps before it:
    (the gradient's coefficient, exp_avg's coefficient, the new mu_product). Shared with the captured step
    (`graph/optimizer_rules.py`), which feeds the coefficients to its graph as inputs."""
    mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
    mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * momentum_decay)))
    mu_product = _scalar(_scalar(mu_product) * _scalar(mu))
    return -lr * (1.0 - mu) / (1.0 - mu_product), (-lr * mu_next) / (1.0 - mu_product * mu_next), mu_product


@in_blocks
def radam_update(param, grad, state, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, decoupled_weight_decay=False,
                 maximize=False):  # fmt: skip
    """RAdam: Adam whose adaptive step is switched on (and rectified) only once the variance of the
    second moment is tractable (rho_t > 5); before that, SGD with bias-corrected momentum."""
    if type(param) is not np.ndarray and _elsewhere(param):  # (first: locals() are the arguments)
        return _on_its_gpu(radam_update, locals())
    xp = _xp(param)
    beta1, beta2 = betas
    step = _stepped(xp, param, state)
    g, _ = _decayed(xp, param, grad, lr, weight_decay, decoupled_weight_decay, maximize)
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    tmp = xp.empty_like(param)
    _moments(exp_avg, exp_avg_sq, g, beta1, beta2, tmp)
    bias_correction1, bias_correction2 = 1 - beta1**step, 1 - beta2**step
    rect = radam_rectification(beta2, step)
    update = xp.divide(exp_avg, bias_correction1, out=xp.empty_like(param))
    update *= lr
    if rect is not None:
        adaptive = xp.sqrt(exp_avg_sq, out=tmp)
        adaptive += eps
        xp.divide(bias_correction2**0.5, adaptive, out=adaptive)
        update *= adaptive
        update *= rect
    param -= update


def radam_rectification(beta2, step):
    """RAdam's rectification term of step `step`, or None while the variance of the adaptive rate is
    intractable (rho_t <= 5: the step is SGD with momentum). Shared with the captured step."""
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * (beta2**step) / (1 - beta2**step)
    if rho_t > 5.0:
        return ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
    return None


@in_blocks
def adamax_update(param, grad, state, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, maximize=False):
    """Adamax: Adam with the infinity norm, a running max of |grad|, in place of the second moment."""
    if type(param) is not np.ndarray and _elsewhere(param):  # (first: locals() are the arguments)
        return _on_its_gpu(adamax_update, locals())
    xp = _xp(param)
    beta1, beta2 = betas
    step = _stepped(xp, param, state, ("exp_avg", "exp_inf"))
    g, _ = _regularized(xp, param, grad, weight_decay, maximize)
    exp_avg, exp_inf = state["exp_avg"], state["exp_inf"]
    tmp = xp.empty_like(param)
    _lerp_(exp_avg, g, 1 - beta1, tmp)
    exp_inf *= beta2  # torch.maximum(exp_inf.mul_(beta2), grad.abs().add_(eps), out=exp_inf)
    norm = xp.abs(g, out=tmp)
    norm += eps
    xp.maximum(exp_inf, norm, out=exp_inf)
    clr = lr / (1 - beta1**step)
    xp.multiply(exp_avg, -clr, out=tmp)  # param.addcdiv_(exp_avg, exp_inf, value=-clr)
    tmp /= exp_inf
    param += tmp


@in_blocks
def adadelta_update(param, grad, state, *, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, maximize=False):
    """Adadelta: the step is the gradient scaled by RMS(past updates) / RMS(gradients), times lr."""
    if type(param) is not np.ndarray and _elsewhere(param):  # (first: locals() are the arguments)
        return _on_its_gpu(adadelta_update, locals())
    xp = _xp(param)
    _stepped(xp, param, state, ("square_avg", "acc_delta"))
    g, _ = _regularized(xp, param, grad, weight_decay, maximize)
    square_avg, acc_delta = state["square_avg"], state["acc_delta"]
    std, delta = xp.empty_like(param), xp.empty_like(param)
    square_avg *= rho  # square_avg.mul_(rho).addcmul_(g, g, value=1 - rho)
    xp.multiply(g, 1 - rho, out=std)
    std *= g
    square_avg += std
    xp.add(square_avg, eps, out=std)
    xp.sqrt(std, out=std)
    xp.add(acc_delta, eps, out=delta)
    xp.sqrt(delta, out=delta)
    delta /= std
    delta *= g
    acc_delta *= rho  # acc_delta.mul_(rho).addcmul_(delta, delta, value=1 - rho)
    xp.multiply(delta, 1 - rho, out=std)
    std *= delta
    acc_delta += std
    _add_scaled(param, delta, -lr, std)


@in_blocks
def rprop_update(param, grad, state, *, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), maximize=False):
    """Rprop: per-weight step sizes, grown by etas[1] while the gradient keeps its sign and shrunk by
    etas[0] when it flips (that step then moves nothing); only the gradient's sign is used. `lr` is
    the initial step size, read on the first step only (as torch)."""
    if type(param) is not np.ndarray and _elsewhere(param):  # (first: locals() are the arguments)
        return _on_its_gpu(rprop_update, locals())
    xp = _xp(param)
    if "step" not in state:
        state["step"] = 0
        state["prev"] = xp.zeros_like(param)
        state["step_size"] = xp.full_like(param, lr)
    state["step"] += 1
    etaminus, etaplus = etas
    prev, step_size = state["prev"], state["step_size"]
    g = xp.negative(grad, out=xp.empty_like(param)) if maximize else grad.copy()
    factor = xp.multiply(g, prev, out=xp.empty_like(param))
    xp.sign(factor, out=factor)
    factor[factor > 0] = etaplus
    factor[factor < 0] = etaminus
    factor[factor == 0] = 1
    step_size *= factor
    xp.clip(step_size, *step_sizes, out=step_size)
    g[factor == etaminus] = 0  # after a sign flip: no move, and the next step sees no previous sign
    xp.sign(g, out=factor)  # param.addcmul_(g.sign(), step_size, value=-1)
    factor *= step_size
    param -= factor
    prev[...] = g


@in_blocks
def asgd_update(param, grad, state, *, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0, maximize=False):
    """ASGD: SGD with a decaying step eta and a running average of the iterates ("ax") from step t0 on;
    eta and the averaging weight mu are torch scalars (`_scalar`)."""
    if type(param) is not np.ndarray and _elsewhere(param):  # (first: locals() are the arguments)
        return _on_its_gpu(asgd_update, locals())
    xp = _xp(param)
    eta, mu = asgd_scalars(state, lr)
    if "step" not in state:
        state["eta"], state["mu"] = eta, mu
    step = _stepped(xp, param, state, ("ax",))
    g, _ = _regularized(xp, param, grad, weight_decay, maximize)
    ax = state["ax"]
    tmp = xp.empty_like(param)
    param *= 1 - lambd * eta
    _add_scaled(param, g, -eta, tmp)
    if mu != 1:  # ax.add_(param.sub(ax).mul_(mu))
        xp.subtract(param, ax, out=tmp)
        tmp *= mu
        ax += tmp
    else:
        ax[...] = param
    state["eta"], state["mu"] = asgd_next(lr, lambd, alpha, t0, step)


def asgd_scalars(state, lr):
    """(eta, mu) of ASGD's coming step: the state's, or lr and 1 before the first step."""
    return (float(state["eta"]), float(state["mu"])) if "step" in state else (_scalar(lr), 1.0)


def asgd_next(lr, lambd, alpha, t0, step):
    """(eta, mu) after step `step`: the decayed step size and the averaging weight (1 until step t0 + 1)."""
    return _scalar(lr / ((1 + lambd * lr * step) ** alpha)), _scalar(1 / max(1, step - t0))


@in_blocks
def rmsprop_update(param, grad, state, *, lr, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                   maximize=False):  # fmt: skip
    """RMSprop: divide by a running RMS of the gradient (centered: of its deviation from its mean)."""
    if type(param) is not np.ndarray and _elsewhere(param):  # (first: locals() are the arguments)
        return _on_its_gpu(rmsprop_update, locals())
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


@in_blocks
def adagrad_update(param, grad, state, *, lr, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                   maximize=False):  # fmt: skip
    """Adagrad: divide by the root of the summed squared gradients; the step size decays as 1/(1 + t·lr_decay)."""
    if type(param) is not np.ndarray and _elsewhere(param):  # (first: locals() are the arguments)
        return _on_its_gpu(adagrad_update, locals())
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
    "rmsprop": rmsprop_update,
    "adagrad": adagrad_update,
    "nadam": nadam_update,
    "radam": radam_update,
    "adamax": adamax_update,
    "adadelta": adadelta_update,
    "rprop": rprop_update,
    "asgd": asgd_update,
}


def make_optimizer_spec(optimizer):
    """(update name, [hyperparameters of each param group]): what a remote store needs to run the same
    update as `optimizer` (a key of `UPDATES` and the keyword arguments of that function)."""
    return optimizer.update_name, [optimizer.update_options(g) for g in optimizer.param_groups]
