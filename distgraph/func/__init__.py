"""torch.func: composable function transforms (grad, vjp, jvp, linearize, jacrev, jacfwd, hessian, vmap),
functional_call and stack_module_state, on distgraph's reverse-mode engine. See transforms.py,
forward.py and batching.py for how each is run (jvp and linearize by double backward, vmap loops over
the batch)."""

from distgraph.func.batching import vmap  # noqa: F401
from distgraph.func.ensembling import stack_module_state  # noqa: F401
from distgraph.func.forward import jvp, linearize  # noqa: F401
from distgraph.func.transforms import grad, grad_and_value, hessian, jacfwd, jacrev, vjp  # noqa: F401
from distgraph.nn.stateless import functional_call  # noqa: F401
