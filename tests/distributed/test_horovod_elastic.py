"""hvd.elastic (horovod_elastic.py): TorchState / ObjectState commit, restore and sync; `hvd.elastic.run` on a
launch with restarts, where a rank that dies mid-epoch restarts every rank and they resume from the last
commit (kept by a Ray actor outside the ranks) to the parameters of an uninterrupted run."""

import os
import time

import numpy as np
import pytest

import distgraph as dg
import distgraph.distributed as dist
import distgraph.distributed.horovod as hvd
from distgraph.distributed import horovod_elastic

EPOCHS, BATCHES, COMMIT_EVERY = 2, 6, 2


def _model_and_optimizer():
    dg.manual_seed(0)
    model = dg.nn.Sequential(dg.nn.Linear(3, 4), dg.nn.Tanh(), dg.nn.Linear(4, 1)).double()
    return model, dg.optim.Adam(model.parameters(), lr=0.05)


def _step(model, opt, epoch, batch, r):
    """One step on this rank's batch, a function of (epoch, batch, rank) only: the data order of a resumed run
    is the uninterrupted one's."""
    rng = np.random.default_rng([epoch, batch, r])
    x, y = dg.tensor(rng.standard_normal((8, 3))), dg.tensor(rng.standard_normal((8, 1)))
    opt.zero_grad()
    ((model(x) - y) ** 2).mean().backward()
    opt.step()


def _params(model):
    return [p.detach().numpy().copy() for p in model.parameters()]


def _train(die_at=None):
    """2 epochs of 6 batches, a commit every 2 batches and at each epoch's end; rank 1's process dies at
    (epoch, batch) `die_at` in the first attempt. → what each rank saw."""
    hvd.init()
    model, opt = _model_and_optimizer()
    opt = hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters())
    state = hvd.elastic.TorchState(model, opt, epoch=0, batch=0)
    resets = []
    state.register_reset_callbacks([lambda: resets.append((state.epoch, state.batch))])

    @hvd.elastic.run
    def train(state):
        resumed_at = (state.epoch, state.batch)
        while state.epoch < EPOCHS:
            while state.batch < BATCHES:
                first_attempt = os.environ["TORCHELASTIC_RESTART_COUNT"] == "0"
                if (state.epoch, state.batch) == die_at and hvd.rank() == 1 and first_attempt:
                    os._exit(1)
                _step(model, opt, state.epoch, state.batch, hvd.rank())
                state.batch += 1
                if state.batch % COMMIT_EVERY == 0:
                    state.commit()
            state.epoch, state.batch = state.epoch + 1, 0
            state.commit()
        return resumed_at

    resumed_at = train(state)
    return {"resumed_at": resumed_at, "resets": resets, "params": _params(model),
            "attempt": os.environ["TORCHELASTIC_RESTART_COUNT"], "keeper": horovod_elastic.keeper_name()}  # fmt: skip


def _gone(ray, name, wait_s=5.0):
    """Whether the named keeper is gone (ray.kill's release of the name may take a moment)."""
    end = time.monotonic() + wait_s
    while True:
        try:
            ray.get_actor(name, namespace=horovod_elastic.NAMESPACE)
        except ValueError:
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.1)


@pytest.mark.ray
def test_a_rank_dying_mid_epoch_resumes_every_rank_from_the_last_commit_to_the_uninterrupted_parameters(
    ray_session, capsys
):
    options = dict(workers=2, cpus_per_worker=0.5, timeout_s=30)
    plain = dist.launch(_train, **options)
    out = dist.launch(_train, kwargs={"die_at": (1, 3)}, max_restarts=1, **options)
    assert "the worker of rank 1 died" in capsys.readouterr().err
    for got in out:
        assert got["attempt"] == "1" and got["resumed_at"] == (1, 2)  # the commit after batch 1 of epoch 1
        assert got["resets"] == [(0, 0)]  # the reset callbacks ran once, before sync loaded the commit
        for p, q in zip(got["params"], plain[0]["params"]):
            assert p.dtype == np.float64 and np.max(np.abs(p - q)) <= 1e-12
    assert plain[0]["resumed_at"] == (0, 0) and plain[0]["resets"] == []
    assert out[0]["keeper"] == out[1]["keeper"] and _gone(ray_session, out[0]["keeper"])


def _object_state_and_keeper():
    """An ObjectState whose values differ by rank, synced on a launch that succeeds at its first attempt."""
    state = hvd.elastic.ObjectState(value=hvd.rank() + 10, seen=[hvd.rank()])

    @hvd.elastic.run
    def check(state):
        synced = (state.value, list(state.seen))
        state.value += 1
        state.commit()  # (rank 0: into the keeper, max_restarts allowing a restart)
        hvd.barrier()
        import ray

        there = ray.get_actor(horovod_elastic.keeper_name(), namespace=horovod_elastic.NAMESPACE) is not None
        return synced, there

    synced, there = check(state)
    return {"synced": synced, "there": there, "keeper": horovod_elastic.keeper_name()}


@pytest.mark.ray
def test_sync_gives_every_rank_rank_0s_values_and_a_successful_end_removes_the_keeper(ray_session):
    out = dist.launch(_object_state_and_keeper, workers=2, cpus_per_worker=0.5, timeout_s=30, max_restarts=1)
    assert [o["synced"] for o in out] == [(10, [0]), (10, [0])] and all(o["there"] for o in out)
    assert _gone(ray_session, out[0]["keeper"])


# ---- in one process ----------------------------------------------------------------------------------------------
def test_restore_puts_back_the_committed_model_optimizer_and_attributes_bitwise():
    model, opt = _model_and_optimizer()
    state = hvd.elastic.TorchState(model, opt, epoch=0, history=[])
    for b in range(2):
        _step(model, opt, 0, b, 0)
    state.epoch, state.history = 1, [1]
    state.commit()
    params, opt_state = _params(model), opt.state_dict()
    for b in range(3):
        _step(model, opt, 1, b, 0)
    state.epoch = 7
    state.history.append(2)
    state.restore()
    assert all(np.array_equal(p, q) for p, q in zip(_params(model), params))
    restored = opt.state_dict()
    for i, entries in opt_state["state"].items():
        for k, v in entries.items():
            assert np.array_equal(restored["state"][i][k], v), (i, k)
    assert state.epoch == 1 and state.history == [1] and state.model is model and state.optimizer is opt


def test_run_alone_syncs_and_calls_the_function_without_a_keeper():
    state = hvd.elastic.ObjectState(batch=3)
    called = hvd.elastic.run(lambda state, extra: (state.batch, extra))
    assert called(state, extra="x") == (3, "x")
    assert horovod_elastic._restartable() is False  # (outside a launch no commit leaves the process)


def test_torch_state_follows_a_replaced_model_and_keeps_plain_values_as_attributes():
    model, opt = _model_and_optimizer()
    state = hvd.elastic.TorchState(model=None, optimizer=opt, lr=0.1)
    assert state.model is None and state.lr == 0.1
    other, _ = _model_and_optimizer()
    state2 = hvd.elastic.TorchState(model, opt)
    state2.model = other
    state2.commit()
    with dg.no_grad():
        for p in other.parameters():
            p.array[...] = 0.0
    state2.restore()
    assert all(np.abs(p).sum() > 0 for p in _params(other))
    assert hvd.HostsUpdatedInterrupt.__mro__[1:3] == (dg.errors.DistgraphError, RuntimeError)


def _commits_then_rank_1_always_dies(folder):
    """A commit (into the keeper in the first attempt), then rank 1's process dies, in every attempt; rank 0
    writes the batch each attempt's sync gave it."""
    state = hvd.elastic.ObjectState(batch=0)

    @hvd.elastic.run
    def train(state):
        if hvd.rank() == 0:
            with open(os.path.join(folder, "synced"), "a") as f:
                f.write(f"{state.batch} ")
        state.batch += 1
        state.commit()
        hvd.barrier()
        if hvd.rank() == 1:
            os._exit(1)
        hvd.barrier()  # rank 0 waits for rank 1, which never comes

    train(state)


@pytest.mark.ray
def test_a_launch_whose_last_attempt_fails_leaves_no_keeper(ray_session, tmp_path, capsys):
    from distgraph.errors import DistributedError

    with pytest.raises(DistributedError, match="the worker of rank 1 died"):
        dist.launch(_commits_then_rank_1_always_dies, workers=2, args=(str(tmp_path),), cpus_per_worker=0.5,
                    timeout_s=30, max_restarts=1)  # fmt: skip
    assert (tmp_path / "synced").read_text() == "0 1 "  # the second attempt synced from the keeper's commit
    assert "restarting all 2 ranks (1/1)" in capsys.readouterr().err
    named = ray_session.util.list_named_actors(all_namespaces=True)  # (the keeper: dropped by the launch's end)
    keepers = [a["name"] for a in named if a["namespace"] == horovod_elastic.NAMESPACE]
    assert all(_gone(ray_session, name) for name in keepers)


def _keepers(ray):
    named = ray.util.list_named_actors(all_namespaces=True)
    return [a["name"] for a in named if a["namespace"] == horovod_elastic.NAMESPACE]


def _two_states_rank_1_dies_once():
    """Two States, each committed in the first attempt before rank 1's process dies; the next attempt syncs the
    second State inside `run`, then the first again. → what the next attempt saw."""
    hvd.init()
    a = hvd.elastic.ObjectState(epoch=0)
    b = hvd.elastic.ObjectState(best_loss=99.0)

    @hvd.elastic.run
    def train(a):
        resumed = {"a": vars(a).get("epoch"), "a has best_loss": hasattr(a, "best_loss")}
        b.sync()  # (its first sync: its own commit)
        resumed.update(b=b.best_loss, b_has_epoch=hasattr(b, "epoch"))
        if os.environ["TORCHELASTIC_RESTART_COUNT"] == "0":
            a.epoch, b.best_loss = 5, 0.5
            a.commit()
            b.commit()
            hvd.barrier()
            if hvd.rank() == 1:
                os._exit(1)
            hvd.barrier()  # rank 0 waits for rank 1, which never comes
        a.epoch = 10 + hvd.rank()
        a.sync()  # a second sync: rank 0's state now, on every rank
        return {**resumed, "a after a second sync": a.epoch, "keeper": horovod_elastic.keeper_name()}

    return train(a)


@pytest.mark.ray
def test_two_states_each_resume_from_their_own_commit(ray_session, capsys):
    out = dist.launch(_two_states_rank_1_dies_once, workers=2, cpus_per_worker=0.5, timeout_s=30, max_restarts=2)
    assert "restarting all 2 ranks (1/2)" in capsys.readouterr().err
    for got in out:
        assert (got["a"], got["a has best_loss"], got["b"], got["b_has_epoch"]) == (5, False, 0.5, False)
    assert _gone(ray_session, out[0]["keeper"])


@pytest.mark.ray
def test_a_second_sync_on_the_last_attempt_gives_every_rank_rank_0s_state(ray_session, capsys):
    out = dist.launch(_two_states_rank_1_dies_once, workers=2, cpus_per_worker=0.5, timeout_s=30, max_restarts=1)
    assert "restarting all 2 ranks (1/1)" in capsys.readouterr().err
    for got in out:  # (the last attempt: its syncs took rank 0's path on every rank, none waited for the others)
        assert (got["a"], got["b"], got["a after a second sync"]) == (5, 0.5, 10)
    assert _gone(ray_session, out[0]["keeper"])


def _commits_then_raises_a_config_error():
    hvd.init()
    state = hvd.elastic.ObjectState(epoch=0)

    @hvd.elastic.run
    def train(state):
        state.epoch = 1
        state.commit()  # (rank 0: the keeper starts)
        hvd.barrier()
        raise dg.errors.ConfigError("a setting no restart changes")

    train(state)


@pytest.mark.ray
def test_a_launch_that_ends_in_a_config_error_leaves_no_keeper(ray_session):
    before = set(_keepers(ray_session))
    with pytest.raises(dg.errors.ConfigError, match="a setting no restart changes"):
        dist.launch(_commits_then_raises_a_config_error, workers=2, cpus_per_worker=0.5, timeout_s=30, max_restarts=2)
    assert all(_gone(ray_session, name) for name in set(_keepers(ray_session)) - before)
