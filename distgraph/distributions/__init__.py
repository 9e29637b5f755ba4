"""`distgraph.distributions`: torch.distributions' families on distgraph tensors, with torch's shapes
(sample + batch + event), argument validation and ValueError messages, log_prob/cdf/icdf/entropy and
moments, reparameterized rsample where torch has one (gradients reach the parameters), and
kl_divergence with register_kl.

Families: Normal, Uniform, Exponential, Laplace (continuous.py); StudentT, Cauchy (continuous_extra.py);
LogNormal, Gumbel, HalfNormal, TransformedDistributions as torch's (transformed_families.py); Gamma, Beta,
Dirichlet (gamma.py); Bernoulli, Categorical, OneHotCategorical (discrete.py); Poisson, Binomial, Geometric
(counts.py); MultivariateNormal, Independent (multivariate.py); MixtureSameFamily (mixture.py);
TransformedDistribution (transformed.py) with the transforms of transforms.py (Exp, Affine, Sigmoid, Tanh,
Abs, Compose). torch's draws and distgraph's come from different generators: the same seed gives the same
distribution, not the same numbers.

torch's per-family module paths (`distgraph.distributions.normal`, `.categorical`, ...) are the modules
that define those classes, registered under torch's names (`_TORCH_MODULES`), not forwarding copies.
"""

import sys

from distgraph.distributions import (
    constraints,  # noqa: F401
    transforms,  # noqa: F401
)
from distgraph.distributions.continuous import Exponential, Laplace, Normal, Uniform  # noqa: F401
from distgraph.distributions.continuous_extra import Cauchy, StudentT  # noqa: F401
from distgraph.distributions.counts import Binomial, Geometric, Poisson  # noqa: F401
from distgraph.distributions.discrete import Bernoulli, Categorical, OneHotCategorical  # noqa: F401
from distgraph.distributions.distribution import Distribution  # noqa: F401
from distgraph.distributions.gamma import Beta, Dirichlet, Gamma  # noqa: F401
from distgraph.distributions.kl import kl_divergence, register_kl  # noqa: F401
from distgraph.distributions.mixture import MixtureSameFamily  # noqa: F401
from distgraph.distributions.multivariate import Independent, MultivariateNormal  # noqa: F401
from distgraph.distributions.transformed import TransformedDistribution  # noqa: F401
from distgraph.distributions.transformed_families import Gumbel, HalfNormal, LogNormal  # noqa: F401
from distgraph.distributions.transforms import (  # noqa: F401
    AbsTransform,
    AffineTransform,
    ComposeTransform,
    ExpTransform,
    SigmoidTransform,
    TanhTransform,
    Transform,
)

_TORCH_MODULES = {
    "normal": "continuous",
    "categorical": "discrete",
    "multivariate_normal": "multivariate",
    "independent": "multivariate",
    "transformed_distribution": "transformed",
    "mixture_same_family": "mixture",
}
for _torch_name, _ours in _TORCH_MODULES.items():
    sys.modules[f"{__name__}.{_torch_name}"] = sys.modules[f"{__name__}.{_ours}"]
