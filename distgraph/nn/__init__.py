"""distgraph.nn: modules, layers, losses, functional forms and initializers, with torch's names.

`nn.parallel` is torch's path to data_parallel.py (DataParallel, data_parallel); distgraph.distributed
attaches DistributedDataParallel to it when imported (a higher layer, which nn may not import)."""

import sys

from distgraph.nn import data_parallel as parallel
from distgraph.nn import functional, grad, init, modules, utils  # noqa: F401
from distgraph.nn.activation import (  # noqa: F401
    CELU,
    ELU,
    GELU,
    GLU,
    SELU,
    Hardshrink,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    LeakyReLU,
    LogSigmoid,
    LogSoftmax,
    Mish,
    PReLU,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Softmax,
    Softmin,
    Softplus,
    Softshrink,
    Softsign,
    Tanh,
    Tanhshrink,
    Threshold,
)
from distgraph.nn.adaptive import AdaptiveLogSoftmaxWithLoss  # noqa: F401
from distgraph.nn.attention import MultiheadAttention  # noqa: F401
from distgraph.nn.container import (  # noqa: F401
    Container,
    ModuleDict,
    ModuleList,
    ParameterDict,
    ParameterList,
    Sequential,
)
from distgraph.nn.conv import Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d  # noqa: F401
from distgraph.nn.conv3d import Conv3d, ConvTranspose3d  # noqa: F401
from distgraph.nn.ctc import CTCLoss  # noqa: F401
from distgraph.nn.data_parallel import DataParallel  # noqa: F401
from distgraph.nn.dropout import AlphaDropout, Dropout, Dropout1d, Dropout2d, Dropout3d, FeatureAlphaDropout  # noqa: F401
from distgraph.nn.extra_layers import (  # noqa: F401
    ChannelShuffle,
    CosineEmbeddingLoss,
    CosineSimilarity,
    EmbeddingBag,
    HingeEmbeddingLoss,
    LPPool1d,
    LPPool2d,
    MaxUnpool1d,
    MaxUnpool2d,
    MultiLabelMarginLoss,
    MultiLabelSoftMarginLoss,
    MultiMarginLoss,
    PairwiseDistance,
    RReLU,
    Softmax2d,
    TripletMarginLoss,
    TripletMarginWithDistanceLoss,
)
from distgraph.nn.instancenorm import (  # noqa: F401
    CrossMapLRN2d,
    InstanceNorm1d,
    InstanceNorm2d,
    InstanceNorm3d,
    LocalResponseNorm,
)
from distgraph.nn.lazy import (  # noqa: F401
    LazyBatchNorm1d,
    LazyBatchNorm2d,
    LazyBatchNorm3d,
    LazyConv1d,
    LazyConv2d,
    LazyConv3d,
    LazyConvTranspose1d,
    LazyConvTranspose2d,
    LazyConvTranspose3d,
    LazyInstanceNorm1d,
    LazyInstanceNorm2d,
    LazyInstanceNorm3d,
    LazyLinear,
    UninitializedBuffer,
    UninitializedParameter,
)
from distgraph.nn.linear import Bilinear, Flatten, Identity, Linear, Unflatten  # noqa: F401
from distgraph.nn.loss import (  # noqa: F401
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    GaussianNLLLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    LinearCrossEntropyLoss,
    MarginRankingLoss,
    MSELoss,
    NLLLoss,
    NLLLoss2d,
    PoissonNLLLoss,
    SmoothL1Loss,
    SoftMarginLoss,
)
from distgraph.nn.module import Module, StateDictError  # noqa: F401
from distgraph.nn.normalization import BatchNorm1d, BatchNorm2d, BatchNorm3d, GroupNorm, LayerNorm, RMSNorm  # noqa: F401
from distgraph.nn.padding import (  # noqa: F401
    CircularPad1d,
    CircularPad2d,
    CircularPad3d,
    ConstantPad1d,
    ConstantPad2d,
    ConstantPad3d,
    ReflectionPad1d,
    ReflectionPad2d,
    ReflectionPad3d,
    ReplicationPad1d,
    ReplicationPad2d,
    ReplicationPad3d,
    ZeroPad1d,
    ZeroPad2d,
    ZeroPad3d,
)
from distgraph.nn.parameter import Buffer, Parameter  # noqa: F401
from distgraph.nn.pool3d import (  # noqa: F401
    AdaptiveAvgPool3d,
    AdaptiveMaxPool3d,
    AvgPool3d,
    FractionalMaxPool3d,
    LPPool3d,
    MaxPool3d,
    MaxUnpool3d,
)
from distgraph.nn.pooling import (  # noqa: F401
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AvgPool1d,
    AvgPool2d,
    FractionalMaxPool2d,
    MaxPool1d,
    MaxPool2d,
)
from distgraph.nn.rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell, RNNCellBase  # noqa: F401
from distgraph.nn.sampling import (  # noqa: F401
    Fold,
    PixelShuffle,
    PixelUnshuffle,
    Unfold,
    Upsample,
    UpsamplingBilinear2d,
    UpsamplingNearest2d,
)
from distgraph.nn.sparse import Embedding  # noqa: F401
from distgraph.nn.sync_batchnorm import SyncBatchNorm  # noqa: F401
from distgraph.nn.transformer import (  # noqa: F401
    Transformer,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)

functional.grad = grad  # torch.nn.functional.grad is torch.nn.grad (set here: grad imports functional)
sys.modules[f"{__name__}.parallel"] = parallel
