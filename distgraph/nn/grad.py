"""torch.nn.grad: a convolution's gradient with respect to its input or its weight, given the gradient of its
output — conv{1,2,3}d_input(input_size, weight, grad_output, ...) and conv{1,2,3}d_weight(input, weight_size,
grad_output, ...).

Each is the backward of the convolution itself (autograd.grad through F.conv*d at a stand-in for the
argument asked about: the convolution is linear in it, so the stand-in's values do not matter), so the
result is differentiable again whenever the tensors given require grad."""

from distgraph.autograd.engine import grad as _grad
from distgraph.autograd.grad_mode import enable_grad, is_grad_enabled
from distgraph.nn.functional import conv1d, conv2d, conv3d
from distgraph.ops.creation import zeros


def _conv_grad(conv, wrt_input, given, size, grad_output, stride, padding, dilation, groups):
    create_graph = is_grad_enabled() and (given.requires_grad or grad_output.requires_grad)
    with enable_grad():
        standin = zeros(*size, dtype=given.dtype, device=given.device, requires_grad=True)
        x, w = (standin, given) if wrt_input else (given, standin)
        out = conv(x, w, None, stride, padding, dilation, groups)
        if tuple(out.shape) != tuple(grad_output.shape):
            raise ValueError(
                f"{conv.__name__}_{'input' if wrt_input else 'weight'}: grad_output has shape "
                f"{tuple(grad_output.shape)}, the convolution's output has {tuple(out.shape)}"
            )
        return _grad(out, standin, grad_output, create_graph=create_graph)[0]


def _pair(conv):
    def input_grad(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1):
        return _conv_grad(conv, True, weight, input_size, grad_output, stride, padding, dilation, groups)

    def weight_grad(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1):
        return _conv_grad(conv, False, input, weight_size, grad_output, stride, padding, dilation, groups)

    for fn, what in ((input_grad, "input"), (weight_grad, "weight")):
        fn.__name__ = fn.__qualname__ = f"{conv.__name__}_{what}"
        fn.__doc__ = f"The gradient of {conv.__name__} with respect to its {what} (torch.nn.grad.{fn.__name__})."
    return input_grad, weight_grad


conv1d_input, conv1d_weight = _pair(conv1d)
conv2d_input, conv2d_weight = _pair(conv2d)
conv3d_input, conv3d_weight = _pair(conv3d)
