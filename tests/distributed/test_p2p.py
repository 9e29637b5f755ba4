"""torch.distributed's point-to-point calls (send / recv / isend / irecv / batch_isend_irecv) inside
`dg.distributed.launch`, on 2 real Ray ranks: values, order per pair and tag, any-source receives, a
pipeline's exchange where every rank sends first, and the errors (a wrong shape, no sender, a bad peer)."""

import datetime
import os
import threading
import time

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
import distgraph.nn as nn
import distgraph.nn.functional as F
from distgraph.errors import ConfigError, DistributedError, DTypeError, ShapeError


def _exchange():
    me, other = dist.get_rank(), 1 - dist.get_rank()
    out = {}
    x = dg.tensor(np.arange(6.0).reshape(2, 3))
    buf = dg.zeros(2, 3, dtype=dg.float64)
    if me == 0:  # ping-pong
        dist.send(x, dst=1)
        assert dist.recv(buf, src=1) == 1
        out["pong"] = buf.tolist()
    else:
        dist.recv(buf, src=0)
        dist.send(buf + 1, dst=0)
    if me == 0:  # order per (pair, tag): a later tag's message first, then three of tag 0
        dist.send(dg.tensor(np.array([50.0])), 1, tag=5)
        for k in range(3):
            dist.send(dg.tensor(np.array([float(k)])), 1)
    else:
        got = dg.zeros(1, dtype=dg.float64)
        seen = []
        for _ in range(3):
            dist.recv(got, 0)
            seen.append(got.item())
        dist.recv(got, 0, tag=5)
        out["order"] = [*seen, got.item()]
    mine = dg.tensor(np.full(4, 10.0 * (me + 1)))  # a pipeline's exchange: both send first
    dist.send(mine, other)
    theirs = dg.zeros(4, dtype=dg.float64)
    dist.recv(theirs, other)
    out["exchange"] = theirs.tolist()
    inbox = dg.zeros(4, dtype=dg.float64)  # batched, as a 1F1B schedule posts them
    ops = [dist.P2POp(dist.irecv, inbox, other), dist.P2POp(dist.isend, mine * 2, other)]
    works = dist.batch_isend_irecv(ops)
    for w in works:
        w.wait()
    out["batched"] = inbox.tolist()
    if me == 1:  # any source
        dist.send(dg.tensor(np.array([7.0])), 0, tag=3)
    else:
        got = dg.zeros(1, dtype=dg.float64)
        out["any"] = (dist.recv(got, tag=3), got.item())
    if me == 0:  # a message of another shape or dtype is refused, and consumed
        dist.send(dg.tensor(np.ones(3)), 1, tag=9)
        dist.send(dg.tensor(np.ones(2, np.float32)), 1, tag=9)
    else:
        with pytest.raises(
            ShapeError, match=r"recv: rank 0 sent a tensor of shape \(3,\), this rank receives into \(2,\)"
        ):
            dist.recv(dg.zeros(2, dtype=dg.float64), 0, tag=9)
        with pytest.raises(DTypeError, match="recv: rank 0 sent float32, this rank receives into float64"):
            dist.recv(dg.zeros(2, dtype=dg.float64), 0, tag=9)
    with pytest.raises(ConfigError, match="should not be the same as the rank of the current process"):
        dist.send(x, dst=me)
    dist.barrier()
    return out


@pytest.mark.ray
def test_send_and_recv_between_two_ranks_in_order_batched_and_from_any_source(ray_session):
    r0, r1 = dist.launch(_exchange, workers=2, cpus_per_worker=0.5, timeout_s=60)
    assert r0["pong"] == (np.arange(6.0).reshape(2, 3) + 1).tolist()
    assert r1["order"] == [0.0, 1.0, 2.0, 50.0]
    assert r0["exchange"] == [20.0] * 4 and r1["exchange"] == [10.0] * 4
    assert r0["batched"] == [40.0] * 4 and r1["batched"] == [20.0] * 4
    assert r0["any"] == (1, 7.0)
    assert not [f for f in os.listdir("/dev/shm") if ".p2p." in f]  # every message taken (or removed with the launch)


def _recv_from_a_silent_peer():
    """Rank 1 waits for a message rank 0 never sends; rank 0 returns at once. Alone in its launch: a peer
    waiting in a barrier meanwhile would meet the same timeout (CI once saw exactly that race)."""
    if dist.get_rank() == 0:
        return None
    with pytest.raises(DistributedError) as caught:
        dist.recv(dg.zeros(1, dtype=dg.float64), 0, tag=4)
    return str(caught.value)


@pytest.mark.ray
def test_a_recv_without_a_sender_times_out_naming_the_source_tag_and_message(ray_session):
    _, message = dist.launch(_recv_from_a_silent_peer, workers=2, cpus_per_worker=0.5, timeout_s=2)
    assert "recv: no message from rank 0 (tag 4, message 0 of that pair) within 2s" in message


def _gloo_pair():
    me = dist.get_rank()
    buf = dg.zeros(3, dtype=dg.float64)
    if me == 0:
        dist.send(dg.tensor(np.array([1.0, 2.0, 3.0])), 1)
        dist.recv(buf, 1)
    else:
        dist.recv(buf, 0)
        dist.send(buf * 10, 0)
    with pytest.raises(ConfigError, match="src=None .* needs the one-node transport; the launch's ranks meet in gloo"):
        dist.recv(buf)
    # both ranks list their send first, as a pipeline's exchange does: the batch orders them per pair
    big = dg.tensor(np.full(1 << 20, float(me)))  # 8 MB: more than a transport would buffer
    inbox = dg.zeros(1 << 20, dtype=dg.float64)
    for w in dist.batch_isend_irecv([dist.P2POp(dist.isend, big, 1 - me), dist.P2POp(dist.irecv, inbox, 1 - me)]):
        w.wait()
    assert inbox.numpy().min() == inbox.numpy().max() == 1 - me
    sent, got = np.array([32767, 7, -32768], dtype=np.int16), dg.zeros(3, dtype=dg.int16)  # gloo has no int16:
    if me == 0:  # it travels as its bytes
        dist.send(dg.tensor(sent), 1)
    else:
        dist.recv(got, 0)
        assert got.dtype == dg.int16 and got.numpy().tolist() == sent.tolist()
    return buf.tolist()


@pytest.mark.ray
def test_send_and_recv_through_a_gloo_group(ray_session):
    pytest.importorskip("torch")
    r0, r1 = dist.launch(_gloo_pair, workers=2, cpus_per_worker=0.5, allreduce="gloo", timeout_s=30)
    assert r0 == [10.0, 20.0, 30.0] and r1 == [1.0, 2.0, 3.0]


def test_alone_there_is_no_peer_and_a_batch_takes_p2p_ops_only():
    with pytest.raises(ConfigError, match=r"send: Invalid destination rank 1: the launch's ranks are 0..0"):
        dist.send(dg.ones(2), dst=1)
    with pytest.raises(ConfigError, match="recv: Invalid source rank: should not be the same"):
        dist.recv(dg.ones(2), src=0)
    with pytest.raises(ConfigError, match="Invalid ``op``"):
        dist.P2POp(dist.send, dg.ones(2), 1)
    with pytest.raises(ConfigError, match="Invalid ``p2p_op_list``"):
        dist.batch_isend_irecv([])


def _stages():
    dg.manual_seed(3)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh()).to(dg.float64), nn.Linear(8, 3).to(dg.float64)


def _batch(step):
    rng = np.random.default_rng(step)
    x = rng.standard_normal((8, 5))
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)


def _pipeline_stage(steps, micro):
    """A two-stage pipeline by hand, as torch users write it: rank 0 runs the first stage and sends each
    micro-batch's activations, rank 1 the second and the loss, and sends the activations' gradients back."""
    me = dist.get_rank()
    first, second = _stages()
    stage = first if me == 0 else second
    opt = dg.optim.SGD(stage.parameters(), lr=0.1, momentum=0.9)
    for step in range(steps):
        x, y = _batch(step)
        opt.zero_grad()
        for m in range(micro):
            rows = slice(m * 8 // micro, (m + 1) * 8 // micro)
            if me == 0:
                h = stage(dg.tensor(x[rows]))
                dist.send(h.detach(), 1)
                grad = dg.zeros(*h.shape, dtype=dg.float64)
                dist.recv(grad, 1)
                h.backward(grad)
            else:
                h = dg.zeros(8 // micro, 8, dtype=dg.float64)
                dist.recv(h, 0)
                h.requires_grad_(True)
                (F.cross_entropy(stage(h), dg.tensor(y[rows])) / micro).backward()
                dist.send(h.grad, 0)
        opt.step()
    return [p.detach().numpy() for p in stage.parameters()]


@pytest.mark.ray
def test_a_pipeline_written_with_send_and_recv_trains_as_one_process(ray_session):
    first_params, second_params = dist.launch(
        _pipeline_stage, workers=2, cpus_per_worker=0.5, args=(4, 2), timeout_s=30
    )
    first, second = _stages()
    model = nn.Sequential(first, second)
    opt = dg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(4):
        x, y = _batch(step)
        opt.zero_grad()
        F.cross_entropy(model(dg.tensor(x)), dg.tensor(y)).backward()
        opt.step()
    for got, want in zip(first_params + second_params, model.parameters()):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=0, atol=1e-12)


def _within(seconds, fn):
    """fn() on a thread, waited for at most `seconds`: ranks that deadlock fail the test, not hang the launch
    (its run has no timeout)."""
    result = []

    def run():
        try:
            result.append((True, fn()))
        except BaseException as exc:  # noqa: BLE001  (raised on the rank's own thread below)
            result.append((False, exc))

    threading.Thread(target=run, daemon=True).start()
    deadline = time.monotonic() + seconds
    while not result and time.monotonic() < deadline:
        time.sleep(0.01)
    assert result, f"not done within {seconds}s: the ranks deadlocked"
    ok, value = result[0]
    if not ok:
        raise value
    return value


def _posted_receive_then_send(me, other):
    inbox = dg.zeros(1 << 20, dtype=dg.float64)  # 8 MB: more than a transport would buffer
    request = dist.irecv(inbox, other)
    dist.send(dg.tensor(np.full(1 << 20, float(me))), other)  # returns once the peer's posted receive takes it
    return request.wait(), request.is_completed(), inbox.numpy().min(), inbox.numpy().max()


def _gloo_nonblocking():
    """torch's isend / irecv return at once through gloo too: each rank posts its receive, then sends (blocking)."""
    me, other = dist.get_rank(), 1 - dist.get_rank()
    out = {"exchange": _within(20, lambda: _posted_receive_then_send(me, other))}
    sends = [dist.isend(dg.tensor(np.array([float(k + 10 * me)])), other) for k in range(3)]  # in order per peer
    got = [dg.zeros(1, dtype=dg.float64) for _ in range(3)]
    receives = [dist.irecv(g, other) for g in got]
    out["ordered"] = [w.wait() for w in sends + receives] and [g.item() for g in got]
    late = dg.zeros(1, dtype=dg.float64)
    if me == 0:  # a receive whose message comes later: wait(timeout) names it, a later wait() takes the message
        pending = dist.irecv(late, 1)
        with pytest.raises(DistributedError, match=r"irecv from rank 1: not done within 0.5s"):
            pending.wait(timeout=datetime.timedelta(seconds=0.5))
        out["late"] = (pending.wait(), late.item())
    else:
        time.sleep(2)
        dist.send(dg.tensor(np.array([42.0])), 0)
    return out


@pytest.mark.ray
def test_isend_and_irecv_through_gloo_do_not_wait_for_the_peer(ray_session):
    pytest.importorskip("torch")
    r0, r1 = dist.launch(_gloo_nonblocking, workers=2, cpus_per_worker=0.5, allreduce="gloo", timeout_s=30)
    assert r0["exchange"] == (True, True, 1.0, 1.0) and r1["exchange"] == (True, True, 0.0, 0.0)
    assert r0["ordered"] == [10.0, 11.0, 12.0] and r1["ordered"] == [0.0, 1.0, 2.0]
    assert r0["late"] == (True, 42.0)
