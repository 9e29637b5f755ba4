"""distgraph.nn.utils: torch.nn.utils's names: gradient clipping, flat parameter vectors, packed sequences
(`rnn`), parametrizations (`parametrize`, `parametrizations`), the older weight/spectral-norm hooks,
conv/linear + BatchNorm folding (`fusion`), pruning masks (`prune`), `stateless.functional_call` (torch's
older path to it; distgraph.nn.stateless registered under it) and `skip_init`."""

import sys

from distgraph.nn import stateless
from distgraph.nn.utils import fusion, parametrizations, parametrize, prune, rnn  # noqa: F401
from distgraph.nn.utils.clip_grad import (  # noqa: F401
    clip_grad_norm,
    clip_grad_norm_,
    clip_grad_value_,
    clip_grads_with_norm_,
    get_total_norm,
)
from distgraph.nn.utils.convert_parameters import parameters_to_vector, vector_to_parameters  # noqa: F401
from distgraph.nn.utils.fusion import (  # noqa: F401
    fuse_conv_bn_eval,
    fuse_conv_bn_weights,
    fuse_linear_bn_eval,
    fuse_linear_bn_weights,
)
from distgraph.nn.utils.init import skip_init  # noqa: F401
from distgraph.nn.utils.norm_hooks import (  # noqa: F401
    remove_spectral_norm,
    remove_weight_norm,
    spectral_norm,
    weight_norm,
)

sys.modules[f"{__name__}.stateless"] = stateless
