"""torch.func: composable function transforms (grad, vjp, jacrev, jacfwd, hessian, vmap) and
functional_call, on distgraph's reverse-mode engine. See transforms.py and batching.py for how each
is run (vmap loops over the batch)."""

from distgraph.func.batching import vmap  # noqa: F401
from distgraph.func.transforms import grad, grad_and_value, hessian, jacfwd, jacrev, vjp  # noqa: F401
from distgraph.nn.stateless import functional_call  # noqa: F401
