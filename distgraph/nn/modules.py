"""torch.nn.modules's import paths: `nn.modules.batchnorm._BatchNorm`, `nn.modules.conv._ConvNd`,
`nn.modules.loss._Loss`, `import distgraph.nn.modules.pooling`, ... name distgraph's classes where a
script ported from torch looks for them (isinstance checks against torch's private bases, mostly).

distgraph groups its layers by its own files (conv3d.py, extra_layers.py, ...), so each torch path is
built here from a table, one line per path, and registered in sys.modules, rather than as two dozen
files that would each only re-export names. `module` and `lazy` are distgraph's own modules (the global
hook registrations live in nn/module.py). Every public class is also an attribute of this module, as torch's.
"""

import importlib
import sys
import types

from distgraph.nn import lazy, module
from distgraph.nn.attention import NonDynamicallyQuantizableLinear as _NonDynamicallyQuantizableLinear

_SOURCES = {  # torch's submodule: (distgraph.nn modules to take from, torch's names in it)
    "activation": (
        "activation extra_layers attention",
        "Threshold ReLU RReLU Hardtanh ReLU6 Sigmoid Hardsigmoid Tanh SiLU Mish Hardswish ELU CELU SELU GLU GELU "
        "Hardshrink LeakyReLU LogSigmoid Softplus Softshrink MultiheadAttention PReLU Softsign Tanhshrink Softmin "
        "Softmax Softmax2d LogSoftmax",
    ),
    "adaptive": ("adaptive", "AdaptiveLogSoftmaxWithLoss"),
    "batchnorm": (
        "normalization lazy sync_batchnorm",
        "_NormBase _BatchNorm BatchNorm1d BatchNorm2d BatchNorm3d LazyBatchNorm1d LazyBatchNorm2d LazyBatchNorm3d "
        "SyncBatchNorm",
    ),
    "channelshuffle": ("extra_layers", "ChannelShuffle"),
    "container": ("container", "Container Sequential ModuleList ModuleDict ParameterList ParameterDict"),
    "conv": (
        "conv conv3d lazy",
        "_ConvNd Conv1d Conv2d Conv3d _ConvTransposeNd ConvTranspose1d ConvTranspose2d ConvTranspose3d LazyConv1d "
        "LazyConv2d LazyConv3d LazyConvTranspose1d LazyConvTranspose2d LazyConvTranspose3d",
    ),
    "distance": ("extra_layers", "PairwiseDistance CosineSimilarity"),
    "dropout": ("dropout", "_DropoutNd Dropout Dropout1d Dropout2d Dropout3d AlphaDropout FeatureAlphaDropout"),
    "flatten": ("linear", "Flatten Unflatten"),
    "fold": ("sampling", "Fold Unfold"),
    "instancenorm": (
        "instancenorm lazy",
        "_InstanceNorm InstanceNorm1d InstanceNorm2d InstanceNorm3d LazyInstanceNorm1d LazyInstanceNorm2d "
        "LazyInstanceNorm3d",
    ),
    "linear": ("linear lazy", "Identity Linear Bilinear LazyLinear"),
    "loss": (
        "loss extra_layers ctc",
        "_Loss _WeightedLoss L1Loss NLLLoss NLLLoss2d PoissonNLLLoss GaussianNLLLoss KLDivLoss MSELoss BCELoss "
        "BCEWithLogitsLoss HingeEmbeddingLoss MultiLabelMarginLoss SmoothL1Loss HuberLoss SoftMarginLoss "
        "CrossEntropyLoss LinearCrossEntropyLoss MultiLabelSoftMarginLoss CosineEmbeddingLoss MarginRankingLoss "
        "MultiMarginLoss TripletMarginLoss TripletMarginWithDistanceLoss CTCLoss",
    ),
    "normalization": ("instancenorm normalization", "LocalResponseNorm CrossMapLRN2d LayerNorm GroupNorm RMSNorm"),
    "padding": (
        "padding",
        "_ConstantPadNd CircularPad1d CircularPad2d CircularPad3d ConstantPad1d ConstantPad2d ConstantPad3d "
        "ReflectionPad1d ReflectionPad2d ReflectionPad3d ReplicationPad1d ReplicationPad2d ReplicationPad3d "
        "ZeroPad1d ZeroPad2d ZeroPad3d",
    ),
    "pixelshuffle": ("sampling", "PixelShuffle PixelUnshuffle"),
    "pooling": (
        "pooling pool3d extra_layers",
        "_MaxPoolNd MaxPool1d MaxPool2d MaxPool3d _MaxUnpoolNd MaxUnpool1d MaxUnpool2d MaxUnpool3d _AvgPoolNd "
        "AvgPool1d AvgPool2d AvgPool3d FractionalMaxPool2d FractionalMaxPool3d _LPPoolNd LPPool1d LPPool2d "
        "LPPool3d _AdaptiveMaxPoolNd AdaptiveMaxPool1d AdaptiveMaxPool2d AdaptiveMaxPool3d _AdaptiveAvgPoolNd "
        "AdaptiveAvgPool1d AdaptiveAvgPool2d AdaptiveAvgPool3d",
    ),
    "rnn": ("rnn", "RNNBase RNN LSTM GRU RNNCellBase RNNCell LSTMCell GRUCell"),
    "sparse": ("sparse extra_layers", "Embedding EmbeddingBag"),
    "transformer": (
        "transformer",
        "Transformer TransformerEncoder TransformerDecoder TransformerEncoderLayer TransformerDecoderLayer",
    ),
    "upsampling": ("sampling", "Upsample UpsamplingNearest2d UpsamplingBilinear2d"),
}


def _build(sub, sources, names):
    """The namespace `distgraph.nn.modules.<sub>`: each name taken from the first source that defines it."""
    space = types.ModuleType(f"{__name__}.{sub}", f"torch.nn.modules.{sub}'s names for distgraph's classes.")
    found = [importlib.import_module(f"distgraph.nn.{s}") for s in sources.split()]
    for name in names.split():
        setattr(space, name, next(getattr(m, name) for m in found if hasattr(m, name)))
    return space


for _sub, (_sources, _names) in _SOURCES.items():
    _space = _build(_sub, _sources, _names)
    globals().update({n: v for n, v in vars(_space).items() if not n.startswith("_")})
    globals()[_sub] = sys.modules[_space.__name__] = _space
del _sources, _names, _space
for _sub in ("linear", "activation"):  # MultiheadAttention.out_proj's class: in these two, not in nn.modules
    sys.modules[f"{__name__}.{_sub}"].NonDynamicallyQuantizableLinear = _NonDynamicallyQuantizableLinear
del _sub
Module = module.Module
sys.modules[f"{__name__}.module"] = module
sys.modules[f"{__name__}.lazy"] = lazy
