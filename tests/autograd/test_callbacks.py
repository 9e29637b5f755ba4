"""queue_callback: what a hook queues runs once, after every .grad of the backward is written, only if the
backward succeeded; outside a backward it is refused."""

import pytest

import distgraph as dg
from distgraph.autograd.callbacks import queue_callback
from distgraph.errors import AutogradError


def test_a_queued_callback_runs_after_every_gradient_of_the_pass():
    a, b = dg.ones(2, requires_grad=True), dg.ones(3, requires_grad=True)
    seen = []

    def hook(p):
        if not seen:
            queue_callback(lambda: seen.append((a.grad.tolist(), b.grad.tolist())))
        seen.append("hook")

    a.register_post_accumulate_grad_hook(hook)
    ((a * 2).sum() + (b * 3).sum()).backward()
    assert seen == ["hook", ([2.0, 2.0], [3.0, 3.0, 3.0])]  # b had no hook; its .grad was there too


def test_callbacks_run_in_order_may_queue_more_and_do_not_run_after_a_failed_pass():
    a = dg.ones(2, requires_grad=True)
    ran = []
    a.register_post_accumulate_grad_hook(
        lambda p: (
            queue_callback(lambda: (ran.append(1), queue_callback(lambda: ran.append(3)))),
            queue_callback(lambda: ran.append(2)),
        )
    )
    a.sum().backward()
    assert ran == [1, 2, 3]

    def bad(p):
        queue_callback(lambda: ran.append("late"))
        raise RuntimeError("hook failed")

    c = dg.ones(2, requires_grad=True)
    c.register_post_accumulate_grad_hook(bad)
    with pytest.raises(RuntimeError, match="hook failed"):
        c.sum().backward()
    assert "late" not in ran
    with pytest.raises(AutogradError, match="no backward pass is running"):
        queue_callback(lambda: None)
