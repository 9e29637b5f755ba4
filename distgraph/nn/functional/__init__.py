"""nn.functional: the functional forms of layers and losses, with torch.nn.functional's names and signatures.

Most functions are compositions of registered ops (so they differentiate to any order); the hot ones
are single fused ops: linear and layer_norm (`ops.layers`), cross-entropy over class indices (`ops.loss`).
"""

from distgraph.nn.functional.activation import (  # noqa: F401
    celu,
    elu,
    gelu,
    glu,
    hardshrink,
    hardsigmoid,
    hardswish,
    hardtanh,
    leaky_relu,
    log_softmax,
    logsigmoid,
    mish,
    prelu,
    relu,
    relu6,
    selu,
    sigmoid,
    silu,
    softmax,
    softmin,
    softplus,
    softshrink,
    softsign,
    tanh,
    tanhshrink,
    threshold,
)
from distgraph.nn.functional.activation_extra import (  # noqa: F401
    celu_,
    elu_,
    gumbel_softmax,
    hardtanh_,
    leaky_relu_,
    relu_,
    rrelu,
    rrelu_,
    selu_,
    threshold_,
)
from distgraph.nn.functional.attention import multi_head_attention_forward, scaled_dot_product_attention  # noqa: F401
from distgraph.nn.functional.compat import (  # noqa: F401
    conv_tbc,
    linear_cross_entropy,
    native_channel_shuffle,
    pdist,
    upsample,
    upsample_bilinear,
    upsample_nearest,
)
from distgraph.nn.functional.ctc import ctc_loss  # noqa: F401
from distgraph.nn.functional.distance import (  # noqa: F401
    cosine_embedding_loss,
    pairwise_distance,
    triplet_margin_loss,
    triplet_margin_with_distance_loss,
)
from distgraph.nn.functional.embedding_bag import embedding_bag  # noqa: F401
from distgraph.nn.functional.extra import (  # noqa: F401
    hinge_embedding_loss,
    multi_margin_loss,
    multilabel_margin_loss,
    multilabel_soft_margin_loss,
)
from distgraph.nn.functional.extra3d import (  # noqa: F401
    adaptive_max_pool3d_with_indices,
    lp_pool3d,
    max_pool3d_with_indices,
    max_unpool3d,
)
from distgraph.nn.functional.fractional import (  # noqa: F401
    fractional_max_pool2d,
    fractional_max_pool2d_with_indices,
    fractional_max_pool3d,
    fractional_max_pool3d_with_indices,
)
from distgraph.nn.functional.layers import (  # noqa: F401
    alpha_dropout,
    batch_norm,
    bilinear,
    cosine_similarity,
    dropout,
    dropout1d,
    dropout2d,
    dropout3d,
    embedding,
    feature_alpha_dropout,
    group_norm,
    layer_norm,
    linear,
    normalize,
    pad,
    rms_norm,
)
from distgraph.nn.functional.loss import (  # noqa: F401
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    gaussian_nll_loss,
    huber_loss,
    kl_div,
    l1_loss,
    margin_ranking_loss,
    mse_loss,
    nll_loss,
    poisson_nll_loss,
    smooth_l1_loss,
    soft_margin_loss,
)
from distgraph.nn.functional.norms import instance_norm, local_response_norm  # noqa: F401
from distgraph.nn.functional.pooling_extra import (  # noqa: F401
    adaptive_max_pool1d_with_indices,
    adaptive_max_pool2d_with_indices,
    channel_shuffle,
    lp_pool1d,
    lp_pool2d,
    max_pool1d_with_indices,
    max_pool2d_with_indices,
    max_unpool1d,
    max_unpool2d,
)
from distgraph.nn.functional.vision import affine_grid, grid_sample  # noqa: F401
from distgraph.ops.conv import conv1d, conv2d, fold, unfold  # noqa: F401
from distgraph.ops.conv3d import conv3d, conv_transpose3d  # noqa: F401
from distgraph.ops.conv_transpose import conv_transpose1d, conv_transpose2d  # noqa: F401
from distgraph.ops.indexing import one_hot  # noqa: F401
from distgraph.ops.pool import (  # noqa: F401
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_max_pool1d,
    adaptive_max_pool2d,
    avg_pool1d,
    avg_pool2d,
    max_pool1d,
    max_pool2d,
)
from distgraph.ops.pool3d import adaptive_avg_pool3d, adaptive_max_pool3d, avg_pool3d, max_pool3d  # noqa: F401
from distgraph.ops.resample import interpolate, pixel_shuffle, pixel_unshuffle  # noqa: F401
