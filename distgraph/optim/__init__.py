"""distgraph.optim: optimizers and learning-rate schedulers with torch's names; update math in `functional`."""

from distgraph.optim import functional, lr_scheduler  # noqa: F401
from distgraph.optim.algorithms import SGD, Adagrad, Adam, AdamW, RMSprop  # noqa: F401
from distgraph.optim.optimizer import Optimizer  # noqa: F401
