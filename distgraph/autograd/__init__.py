"""Define-by-run reverse-mode autograd: Tensor, the engine, grad modes, custom Functions, gradcheck."""

from distgraph.autograd import forward_ad, functional, graph  # noqa: F401
from distgraph.autograd.custom import Function, FunctionCtx  # noqa: F401
from distgraph.autograd.engine import backward, grad  # noqa: F401
from distgraph.autograd.grad_mode import (  # noqa: F401
    detect_anomaly,
    enable_grad,
    inference_mode,
    is_grad_enabled,
    is_inference_mode_enabled,
    no_grad,
    set_detect_anomaly,
    set_grad_enabled,
)
from distgraph.autograd.gradcheck import gradcheck, gradgradcheck  # noqa: F401
from distgraph.autograd.tensor import Tensor  # noqa: F401
