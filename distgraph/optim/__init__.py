"""distgraph.optim: torch's optimizers and learning-rate schedulers; the update math, on plain arrays, is
in `functional` (shared with the distributed parameter store)."""

from distgraph.optim import functional, functional_matrix, lr_scheduler, swa_utils  # noqa: F401
from distgraph.optim.adadelta import Adadelta  # noqa: F401
from distgraph.optim.adafactor import Adafactor  # noqa: F401
from distgraph.optim.adagrad import Adagrad  # noqa: F401
from distgraph.optim.adam import Adam, AdamW  # noqa: F401
from distgraph.optim.adamax import Adamax  # noqa: F401
from distgraph.optim.lbfgs import LBFGS  # noqa: F401
from distgraph.optim.muon import Muon  # noqa: F401
from distgraph.optim.nadam import NAdam, RAdam  # noqa: F401
from distgraph.optim.optimizer import Optimizer  # noqa: F401
from distgraph.optim.rmsprop import RMSprop  # noqa: F401
from distgraph.optim.rprop import ASGD, Rprop  # noqa: F401
from distgraph.optim.sgd import SGD  # noqa: F401
