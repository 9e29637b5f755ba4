"""distgraph.nn: modules, layers, losses, functional forms and initializers, with torch's names."""

from distgraph.nn import functional, init, utils  # noqa: F401
from distgraph.nn.activation import (  # noqa: F401
    ELU,
    GELU,
    Hardtanh,
    LeakyReLU,
    LogSigmoid,
    LogSoftmax,
    Mish,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Softsign,
    Tanh,
)
from distgraph.nn.container import ModuleDict, ModuleList, Sequential  # noqa: F401
from distgraph.nn.linear import Bilinear, Flatten, Identity, Linear, Unflatten  # noqa: F401
from distgraph.nn.loss import (  # noqa: F401
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    KLDivLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
)
from distgraph.nn.module import Module  # noqa: F401
from distgraph.nn.normalization import BatchNorm1d, BatchNorm2d, Dropout, Embedding, LayerNorm  # noqa: F401
from distgraph.nn.parameter import Buffer, Parameter  # noqa: F401
