"""torch.func.stack_module_state: the parameters and buffers of several models of one class stacked
along a new leading dim, for running the ensemble as one call (vmap over functional_call on a base copy
of the model, as torch's model-ensembling recipe does)."""

from distgraph.ops.shape import stack


def stack_module_state(models):
    """(params, buffers): dicts from each name to the models' tensors stacked (model index first). A
    stacked parameter is a new leaf that requires grad (when the models' do), so it can be trained."""
    models = list(models)
    if not models:
        raise RuntimeError("stack_module_state: Expected at least one model, got 0.")
    if len({m.training for m in models}) != 1:
        raise RuntimeError("stack_module_state: Expected all models to have the same training/eval mode.")
    if len({type(m) for m in models}) != 1:
        raise RuntimeError("stack_module_state: Expected all models to be of the same class.")
    params = _stacked([dict(m.named_parameters()) for m in models])
    buffers = _stacked([dict(m.named_buffers()) for m in models])
    return params, buffers


def _stacked(states):
    out = {}
    for name in states[0]:
        tensors = [s[name] for s in states]
        wants_grad = {t.requires_grad for t in tensors}
        if len(wants_grad) != 1:
            raise RuntimeError(f"Expected {name} from each model to have the same .requires_grad")
        out[name] = stack(tensors).detach().requires_grad_(wants_grad.pop())
    return out
