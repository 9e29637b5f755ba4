"""A model with ConvTranspose2d, Upsample, PixelShuffle, Unfold/Fold and border padding captures and
compiles: the graph's loss and gradients are eager's, bit for bit, over steps with updated parameters."""

import warnings

import numpy as np

import distgraph as dg
import distgraph.nn.functional as F
from distgraph import nn
from distgraph.graph.capture import capture
from distgraph.graph.compile import CompileWarning
from distgraph.graph.executor import Runner
from tests.graph.helpers import assert_step_matches_eager, randn


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1)
        self.thin = nn.ConvTranspose2d(6, 4, 2, dilation=3, output_padding=2, groups=2)  # the cropped form
        self.pad = nn.ReflectionPad2d((1, 0, 2, 1))
        self.resize = nn.Upsample(scale_factor=1.5, mode="bilinear")
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        h = self.pad(self.thin(self.up(x).tanh()))
        h = self.shuffle(self.resize(h))  # (N, 1, ·, ·)
        cols = F.unfold(h, 2, stride=2)
        return F.fold(cols.sigmoid(), h.shape[2:], 2, stride=2) + F.interpolate(h, scale_factor=1, mode="nearest")


def _model_and_batch():
    model = Decoder()
    for p in model.parameters():
        p.data = p.detach().to(dg.float64)
    return model, randn(2, 4, 3, 3)


def test_decoder_forward_and_gradients_of_the_captured_graph_equal_eager():
    model, x = _model_and_batch()
    loss_fn = lambda x: model(x).square().mean()  # noqa: E731
    graph, params, _ = capture(loss_fn, [x], grad_of=list(model.parameters()))
    outs = Runner(graph)(x.array, *[p.array for p in params])
    loss = loss_fn(x)
    loss.backward()
    assert outs[0] == loss.array
    for g, p in zip(outs[1:], params):
        np.testing.assert_array_equal(g, p.grad.array)


def test_compiled_decoder_step_matches_eager_after_parameter_updates():
    model, x = _model_and_batch()
    target = randn(*model(x).shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)  # no fallback to eager
        step = dg.compile(model, (x, target), loss_fn=F.mse_loss)
        step(x, target)
    assert step.variants and all(v != "eager" for v in step.variants.values())
    for _ in range(2):
        assert_step_matches_eager(step, model, F.mse_loss, (x,), target)
        with dg.no_grad():
            for p in model.parameters():
                p.sub_(p.grad * 0.1)
