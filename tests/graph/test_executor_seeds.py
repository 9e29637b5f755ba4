"""Seeded runs with random draws repeat: a local pipeline's stages draw on threads, each (subgraph,
micro-batch) task from generators seeded in the schedule's order on the calling thread."""

import threading

import numpy as np

import distgraph as dg
import distgraph.nn as nn
from distgraph.graph.executor import LocalExecutor
from distgraph.graph.partition import pipeline
from distgraph.ops.rng import generator, seeded_draws
from tests.graph.helpers import captured, randn


def _mlp():
    return nn.Sequential(
        nn.Linear(32, 64), nn.Dropout(0.3), nn.Tanh(), nn.Linear(64, 64), nn.Dropout(0.3), nn.Tanh(), nn.Linear(64, 3)
    )


def _fit_pipeline(seed=0):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 32)).astype(np.float32)
    y = rng.integers(0, 3, 256)
    dg.manual_seed(0)
    model = _mlp()
    opt = dg.optim.SGD(model.parameters(), lr=0.1)
    dg.manual_seed(seed)
    trainer = dg.Trainer(
        model, nn.functional.cross_entropy, opt, progress=False, workers=2, strategy="pipeline", micro_batches=4
    )
    with trainer:
        trainer.fit((x, y), epochs=1, batch_size=64)
    return np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])


def test_seeded_pipeline_fits_with_dropout_give_the_same_parameters():
    first = _fit_pipeline()
    for _ in range(3):  # the stages' threads interleave differently from run to run
        assert np.array_equal(_fit_pipeline(), first)
    assert not np.array_equal(_fit_pipeline(seed=1), first)  # the driver's seed decides the masks


def _dropout_step(x, w):
    h = nn.functional.dropout((x @ w).tanh(), 0.5, training=True)
    return ((h @ w.T) ** 2).mean()


def test_a_pipeline_plan_with_dropout_repeats_its_runs_under_a_seed_and_moves_on_without_one():
    w = randn(16, 16).requires_grad_()
    graph, arrays = captured(_dropout_step, randn(4, 16), w, grad_of=[w])
    plan = pipeline(graph, 2, micro_batches=4)
    x = randn(16, 16).array
    with LocalExecutor(plan, workers=2, schedule="1f1b") as ex:
        dg.manual_seed(5)
        runs = [ex.run(x, *arrays[1:]) for _ in range(2)]
        dg.manual_seed(5)
        again = [ex.run(x, *arrays[1:]) for _ in range(2)]
    for a, b in zip(runs, again):
        assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(runs[0][1], runs[1][1])  # each run draws new masks


def test_seeded_draws_are_the_threads_own_and_leave_the_process_generator_alone():
    cpu = dg.device("cpu")
    dg.manual_seed(1)
    process = generator(cpu).random(6)
    dg.manual_seed(1)
    other = []
    with seeded_draws(7):
        inside = generator(cpu).random(3)
        t = threading.Thread(target=lambda: other.append(generator(cpu).random(3)))  # the process's generator
        t.start()
        t.join()
    assert np.array_equal(inside, np.random.default_rng(7).random(3))
    assert np.array_equal(other[0], process[:3])
    assert np.array_equal(generator(cpu).random(3), process[3:])  # inside the block it did not move
