"""L-BFGS (torch.optim.LBFGS): a quasi-Newton method that re-evaluates the loss through a closure, with an
optional strong-Wolfe line search.

Unlike the other optimizers, a step is a loop of many loss and gradient evaluations over one flat vector
of every parameter, so it is written here on that vector (an array of the parameters' backend) rather than
as a per-parameter update of `functional`. It follows torch's `lbfgs.py` step by step: the same tests, in the
same order, with the same scalars (torch's 0-d tensors are Python floats here, the same doubles for float64
parameters). Its state lives under the first parameter with torch's keys (func_evals, n_iter, d, t, old_dirs,
old_stps, ro, H_diag, prev_flat_grad, prev_loss, al), so `state_dict()` has torch's layout.
"""

from distgraph.autograd.grad_mode import enable_grad, no_grad
from distgraph.backend import to_device
from distgraph.errors import ConfigError
from distgraph.optim.optimizer import Optimizer


class LBFGS(Optimizer):
    """params, lr=1, max_iter=20, max_eval=None (max_iter * 5 // 4), tolerance_grad=1e-7, tolerance_change=1e-9,
    history_size=100, line_search_fn=None ("strong_wolfe" or None). One param group only; `step(closure)`
    needs the closure (it zeroes the gradients, computes the loss, calls backward and returns the loss)."""

    hyperparameters = {
        "lr": 1,
        "max_iter": 20,
        "max_eval": None,
        "tolerance_grad": 1e-7,
        "tolerance_change": 1e-9,
        "history_size": 100,
        "line_search_fn": None,
    }

    def __init__(self, params, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7, tolerance_change=1e-9,
                 history_size=100, line_search_fn=None):  # fmt: skip
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        defaults = dict(
            lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
            tolerance_change=tolerance_change, history_size=history_size, line_search_fn=line_search_fn,
        )  # fmt: skip
        super().__init__(params, defaults)

    def add_param_group(self, param_group):
        """The one group; a second (in the constructor's list or added later) is refused, as torch's."""
        if self.param_groups:
            raise ConfigError("LBFGS doesn't support per-parameter options (parameter groups)")
        super().add_param_group(param_group)

    # ---- the flat vector of every parameter -------------------------------------------------------------------
    @property
    def _flat_params(self):
        return self.param_groups[0]["params"]

    def _gather_flat_grad(self):
        ps = self._flat_params
        xp = ps[0].device.xp
        return xp.concatenate(
            [xp.zeros(p.numel(), p.array.dtype) if p.grad is None else p.grad.array.reshape(-1) for p in ps]
        )

    def _add_grad(self, step_size, update):
        """Every parameter += step_size · its slice of `update`, in place (torch's `_add_grad`)."""
        offset = 0
        for p in self._flat_params:
            n = p.numel()
            p.array += step_size * update[offset : offset + n].reshape(p.array.shape)
            p._vc[0] += 1  # changed in place: saved-tensor checks must see it
            offset += n

    def _set_param(self, arrays):
        for p, a in zip(self._flat_params, arrays):
            p.array[...] = a
            p._vc[0] += 1

    def _directional_evaluate(self, closure, x, t, d):
        self._add_grad(t, d)
        loss = float(closure())
        flat_grad = self._gather_flat_grad()
        self._set_param(x)
        return loss, flat_grad

    # ---- the step ---------------------------------------------------------------------------------------------
    def step(self, closure):
        """Up to max_iter L-BFGS iterations; returns the loss the closure gave first."""
        group = self.param_groups[0]
        lr, max_iter, max_eval = group["lr"], group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        line_search_fn, history_size = group["line_search_fn"], group["history_size"]

        def evaluate():
            with enable_grad():
                return closure()

        with no_grad():
            state = self.state[self._flat_params[0]]
            state.setdefault("func_evals", 0)
            state.setdefault("n_iter", 0)
            orig_loss = evaluate()
            loss = float(orig_loss)
            current_evals = 1
            state["func_evals"] += 1
            flat_grad = self._gather_flat_grad()
            if float(abs(flat_grad).max()) <= tolerance_grad:  # optimal already
                return orig_loss
            d, t = state.get("d"), state.get("t")
            old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
            h_diag, prev_flat_grad, prev_loss = state.get("H_diag"), state.get("prev_flat_grad"), state.get("prev_loss")
            n_iter = 0
            while n_iter < max_iter:
                n_iter += 1
                state["n_iter"] += 1
                # the descent direction
                if state["n_iter"] == 1:
                    d = -flat_grad
                    old_dirs, old_stps, ro, h_diag = [], [], [], 1
                else:
                    y = flat_grad - prev_flat_grad
                    s = d * t
                    ys = float(y.dot(s))
                    if ys > 1e-10:  # update the memory
                        if len(old_dirs) == history_size:
                            old_dirs.pop(0), old_stps.pop(0), ro.pop(0)
                        old_dirs.append(y)
                        old_stps.append(s)
                        ro.append(1.0 / ys)
                        h_diag = ys / float(y.dot(y))
                    if "al" not in state:
                        state["al"] = [None] * history_size
                    al = state["al"]
                    q = -flat_grad  # the two-loop recursion
                    for i in range(len(old_dirs) - 1, -1, -1):
                        al[i] = float(old_stps[i].dot(q)) * ro[i]
                        q += -al[i] * old_dirs[i]
                    d = r = q * h_diag
                    for i in range(len(old_dirs)):
                        be_i = float(old_dirs[i].dot(r)) * ro[i]
                        r += (al[i] - be_i) * old_stps[i]
                prev_flat_grad = flat_grad.copy()
                prev_loss = loss
                # the step length
                t = min(1.0, 1.0 / float(abs(flat_grad).sum())) * lr if state["n_iter"] == 1 else lr
                gtd = float(flat_grad.dot(d))
                if gtd > -tolerance_change:  # no descent along d
                    break
                ls_func_evals = 0
                if line_search_fn is not None:
                    if line_search_fn != "strong_wolfe":
                        raise RuntimeError("only 'strong_wolfe' is supported")
                    x_init = [p.array.copy() for p in self._flat_params]

                    def obj_func(x, t, d):
                        return self._directional_evaluate(evaluate, x, t, d)

                    loss, flat_grad, t, ls_func_evals = strong_wolfe(
                        obj_func, x_init, t, d, loss, flat_grad, gtd, max_ls=max_eval - current_evals
                    )
                    self._add_grad(t, d)
                    opt_cond = float(abs(flat_grad).max()) <= tolerance_grad
                else:
                    self._add_grad(t, d)
                    if n_iter != max_iter:  # re-evaluate, unless this is the last iteration
                        loss = float(evaluate())
                        flat_grad = self._gather_flat_grad()
                        opt_cond = float(abs(flat_grad).max()) <= tolerance_grad
                        ls_func_evals = 1
                current_evals += ls_func_evals
                state["func_evals"] += ls_func_evals
                # the stopping tests, in torch's order
                if n_iter == max_iter or current_evals >= max_eval or opt_cond:
                    break
                if float(abs(d * t).max()) <= tolerance_change or abs(loss - prev_loss) < tolerance_change:
                    break
            state.update(
                d=d, t=t, old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=h_diag, prev_flat_grad=prev_flat_grad,
                prev_loss=prev_loss,
            )  # fmt: skip
        return orig_loss

    def _load_param_state(self, param, entries):
        """torch's LBFGS state: flat arrays (d, prev_flat_grad), lists of them (old_dirs, old_stps), scalars."""

        def load(value):
            if isinstance(value, list | tuple):
                return [load(v) for v in value]
            if value is None or isinstance(value, int | float):
                return value
            if hasattr(value, "numpy") and not hasattr(value, "__array_namespace__"):
                value = value.detach().cpu().numpy() if hasattr(value, "detach") else value.numpy()
            if getattr(value, "ndim", 1) == 0:
                return float(value)
            return to_device(getattr(value, "array", value), param.device).astype(param.array.dtype, copy=True)

        return {k: (int(v) if k in ("func_evals", "n_iter") else load(v)) for k, v in entries.items()}


def cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """The minimiser of the cubic through (x1, f1, g1) and (x2, f2, g2), clamped to `bounds` (default: the two
    points); their midpoint when the cubic has none (torch's `_cubic_interpolate`)."""
    xmin_bound, xmax_bound = bounds if bounds is not None else ((x1, x2) if x1 <= x2 else (x2, x1))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square >= 0:
        d2 = d2_square**0.5
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def strong_wolfe(obj_func, x, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    """torch's `_strong_wolfe`: bracket a step satisfying the strong Wolfe conditions, then zoom into the
    bracket by cubic interpolation. Returns (loss, flat gradient, step, evaluations)."""
    d_norm = float(abs(d).max())
    g = g.copy()
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals = 1
    gtd_new = float(g_new.dot(d))
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:  # bracketing phase
        decreased = not (f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev))
        if decreased and abs(gtd_new) <= -c2 * gtd:  # the strong Wolfe conditions hold at t
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if not decreased or gtd_new >= 0:  # a minimum lies between t_prev and t (torch's two cases, one bracket)
            bracket, bracket_f, bracket_g = [t_prev, t], [f_prev, f_new], [g_prev, g_new.copy()]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        min_step = t + 0.01 * (t - t_prev)  # interpolate
        max_step = t * 10
        tmp = t
        t = cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new.copy(), gtd_new
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = float(g_new.dot(d))
        ls_iter += 1
    if ls_iter == max_ls:  # reached the maximum number of iterations
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]
    # zoom phase: a point satisfying the criteria, or a bracket too small to go on
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
        # a step too close to the bracket's ends makes too little progress: move it inside
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                t = max(bracket) - eps if abs(t - max(bracket)) < abs(t - min(bracket)) else min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = float(g_new.dot(d))
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            # Armijo fails or no lower than the low end: shrink the bracket from the high end
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new.copy(), gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:  # Wolfe conditions hold
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:  # the old high becomes the new low
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos] = t, f_new  # the new point becomes the new low
            bracket_g[low_pos], bracket_gtd[low_pos] = g_new.copy(), gtd_new
    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals
