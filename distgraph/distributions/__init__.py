"""`distgraph.distributions`: torch.distributions' families on distgraph tensors, with torch's shapes
(sample + batch + event), argument validation and ValueError messages, log_prob/cdf/icdf/entropy and
moments, reparameterized rsample where torch has one (gradients reach the parameters), and
kl_divergence with register_kl.

Families: Normal, Uniform, Exponential, Laplace (continuous.py); StudentT, Cauchy (continuous_extra.py);
ContinuousBernoulli (continuous_bernoulli.py); VonMises (von_mises.py); LogNormal, Gumbel, HalfNormal
(transformed_families.py) and Weibull, Pareto, HalfCauchy, InverseGamma, Kumaraswamy
(transformed_families_extra.py), TransformedDistributions as torch's; Gamma, Chi2, Beta, Dirichlet,
FisherSnedecor (gamma.py); Bernoulli, Categorical, OneHotCategorical, OneHotCategoricalStraightThrough
(discrete.py); Poisson, Binomial, Geometric, NegativeBinomial, Multinomial (counts.py); LogitRelaxedBernoulli,
RelaxedBernoulli, ExpRelaxedCategorical, RelaxedOneHotCategorical (relaxed.py); MultivariateNormal,
Independent (multivariate.py); LowRankMultivariateNormal (lowrank_normal.py); MixtureSameFamily
(mixture.py); TransformedDistribution (transformed.py) with the transforms of transforms.py (Exp, Affine,
Sigmoid, Tanh, Abs, Power, Compose). KL pairs are in kl.py and kl_more.py. torch's draws and distgraph's
come from different generators: the same seed gives the same distribution, not the same numbers.

torch's per-family module paths (`distgraph.distributions.normal`, `.categorical`, ...) are the modules
that define those classes, registered under torch's names (`_TORCH_MODULES`), not forwarding copies.
"""

import sys

from distgraph.distributions import (
    constraints,  # noqa: F401
    kl_more,  # noqa: F401  (registers its KL pairs)
    transforms,  # noqa: F401
)
from distgraph.distributions.continuous import Exponential, Laplace, Normal, Uniform  # noqa: F401
from distgraph.distributions.continuous_bernoulli import ContinuousBernoulli  # noqa: F401
from distgraph.distributions.continuous_extra import Cauchy, StudentT  # noqa: F401
from distgraph.distributions.counts import Binomial, Geometric, Multinomial, NegativeBinomial, Poisson  # noqa: F401
from distgraph.distributions.discrete import (  # noqa: F401
    Bernoulli,
    Categorical,
    OneHotCategorical,
    OneHotCategoricalStraightThrough,
)
from distgraph.distributions.distribution import Distribution  # noqa: F401
from distgraph.distributions.gamma import Beta, Chi2, Dirichlet, FisherSnedecor, Gamma  # noqa: F401
from distgraph.distributions.kl import kl_divergence, register_kl  # noqa: F401
from distgraph.distributions.lowrank_normal import LowRankMultivariateNormal  # noqa: F401
from distgraph.distributions.mixture import MixtureSameFamily  # noqa: F401
from distgraph.distributions.multivariate import Independent, MultivariateNormal  # noqa: F401
from distgraph.distributions.relaxed import (  # noqa: F401
    ExpRelaxedCategorical,
    LogitRelaxedBernoulli,
    RelaxedBernoulli,
    RelaxedOneHotCategorical,
)
from distgraph.distributions.transformed import TransformedDistribution  # noqa: F401
from distgraph.distributions.transformed_families import Gumbel, HalfNormal, LogNormal  # noqa: F401
from distgraph.distributions.transformed_families_extra import (  # noqa: F401
    HalfCauchy,
    InverseGamma,
    Kumaraswamy,
    Pareto,
    Weibull,
)
from distgraph.distributions.transforms import (  # noqa: F401
    AbsTransform,
    AffineTransform,
    ComposeTransform,
    ExpTransform,
    PowerTransform,
    SigmoidTransform,
    TanhTransform,
    Transform,
)
from distgraph.distributions.von_mises import VonMises  # noqa: F401

_TORCH_MODULES = {
    "normal": "continuous",
    "categorical": "discrete",
    "multivariate_normal": "multivariate",
    "independent": "multivariate",
    "transformed_distribution": "transformed",
    "mixture_same_family": "mixture",
    "negative_binomial": "counts",
    "multinomial": "counts",
    "relaxed_bernoulli": "relaxed",
    "relaxed_categorical": "relaxed",
    "one_hot_categorical": "discrete",
    "lowrank_multivariate_normal": "lowrank_normal",
    "chi2": "gamma",
    "fishersnedecor": "gamma",
    "weibull": "transformed_families_extra",
    "pareto": "transformed_families_extra",
    "half_cauchy": "transformed_families_extra",
    "inverse_gamma": "transformed_families_extra",
    "kumaraswamy": "transformed_families_extra",
}
for _torch_name, _ours in _TORCH_MODULES.items():
    sys.modules[f"{__name__}.{_torch_name}"] = sys.modules[f"{__name__}.{_ours}"]
