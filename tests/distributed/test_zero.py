"""The parameter store sharded across workers (zero.py): ranks run in threads of this process, on a
real shared-memory segment, and must give the local optimizer's bits."""

import threading
import uuid

import numpy as np
import pytest

import distgraph as dg
from distgraph import nn
from distgraph.distributed.step import combine_gradients
from distgraph.distributed.zero import ShardedParameters, assemble, read_parameters
from distgraph.errors import DistributedError
from distgraph.optim.functional import make_optimizer_spec


def model(seed=0):
    dg.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))


def run_ranks(world, fn):
    """fn(rank) in one thread per rank; re-raises the first error."""
    out, errors = [None] * world, []

    def run(rank):
        try:
            out[rank] = fn(rank)
        except Exception as exc:  # noqa: BLE001  (re-raised below)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    if errors:
        raise errors[0]
    return out


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: dg.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
        lambda p: dg.optim.Adam(p, lr=0.01),
        lambda p: dg.optim.RMSprop(p, lr=0.01, momentum=0.5),
        lambda p: dg.optim.NAdam(p, lr=0.01, weight_decay=1e-3, decoupled_weight_decay=True),  # scalar state
        lambda p: dg.optim.ASGD(p, lr=0.01, t0=2, lambd=0.01),  # scalar state: eta and mu
        lambda p: dg.optim.Rprop(p, lr=0.01),
        lambda p: dg.optim.RAdam(p, lr=0.01, betas=(0.5, 0.6)),  # rectified from step 2 on
    ],
)
def test_sharded_steps_equal_the_local_optimizer_bit_for_bit(world, make_opt):
    rng = np.random.default_rng(0)
    steps = 4
    grads = [[[rng.standard_normal(p.shape).astype(np.float32) for p in model().parameters()] for _ in range(world)]
             for _ in range(steps)]  # fmt: skip
    reference = model()
    ref_opt = make_opt(reference.parameters())
    for t in range(steps):
        for p, g in zip(reference.parameters(), combine_gradients(grads[t])):
            p.grad = dg.tensor(g)
        ref_opt.step()

    driver = model()
    name, groups = make_optimizer_spec(make_opt(driver.parameters()))
    hypers = [{k: v for k, v in groups[0].items() if k != "params"} for _ in driver.parameters()]
    group = f"t{uuid.uuid4().hex[:8]}"
    replicas = [model() for _ in range(world)]

    def rank_fn(rank):
        params = list(replicas[rank].parameters())
        sharded = ShardedParameters(params, rank, world, group, name, hypers, timeout_s=10)
        sharded.load([p.array.copy() for p in driver.parameters()], [{} for _ in params], version=0)
        own = sharded.exchange.slot[sharded.lo : sharded.hi]  # its peers never read it: nothing is copied there
        for t in range(steps):
            own[...] = np.nan  # were it read, the result would be NaN
            sharded.step(grads[t][rank])
            assert np.isnan(own).all()
        chunk = sharded.state_chunk()
        values = [p.array.copy() for p in params]  # the replica reads the segment
        sharded.close()
        return chunk, values

    results = run_ranks(world, rank_fn)
    version, params, states = assemble([c for c, _ in results], [p.shape for p in driver.parameters()])
    assert version == steps
    for ref, got in zip(reference.parameters(), params):
        assert np.array_equal(ref.array, got)
    for _, values in results:  # every replica sees all of the new parameters
        assert all(np.array_equal(r.array, v) for r, v in zip(reference.parameters(), values))
    ref_state = ref_opt.state_dict()["state"]
    for i, st in enumerate(states):
        assert set(st) == set(ref_state.get(i, {}))
        for k, v in st.items():
            assert np.array_equal(np.asarray(ref_state[i][k]), np.asarray(v)), (i, k)


def test_loading_a_state_and_continuing_equals_an_uninterrupted_run():
    """The snapshot a restarted group resumes from: assemble → load → same next step as without a break."""
    rng = np.random.default_rng(1)
    shapes = [p.shape for p in model().parameters()]
    grads = [[[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(2)] for _ in range(3)]
    driver = model()
    name, groups = make_optimizer_spec(dg.optim.Adam(driver.parameters(), lr=0.01))
    hypers = [{k: v for k, v in groups[0].items() if k != "params"} for _ in shapes]
    start = [p.array.copy() for p in driver.parameters()]

    def run(steps, arrays, states, version):
        group, replicas = f"t{uuid.uuid4().hex[:8]}", [model() for _ in range(2)]

        def rank_fn(rank):
            sp = ShardedParameters(list(replicas[rank].parameters()), rank, 2, group, name, hypers, timeout_s=10)
            sp.load(arrays, states, version)
            for t in steps:
                sp.step(grads[t][rank])
            chunk = sp.state_chunk()
            sp.close()
            return chunk

        return assemble(run_ranks(2, rank_fn), shapes)

    straight = run(range(3), start, [{} for _ in shapes], 0)
    v, p, s = run(range(2), start, [{} for _ in shapes], 0)
    resumed = run(range(2, 3), p, s, v)
    assert straight[0] == resumed[0] == 3
    assert all(np.array_equal(a, b) for a, b in zip(straight[1], resumed[1]))


def test_mixed_dtypes_are_refused_with_a_clear_error():
    m = model()
    m[2].double()
    with pytest.raises(DistributedError, match="one floating dtype"):
        ShardedParameters(list(m.parameters()), 0, 1, f"t{uuid.uuid4().hex[:8]}", "sgd", [{"lr": 0.1}] * 4)


@pytest.mark.parametrize("steps", [1, 2])
def test_an_observer_reads_the_parameters_from_the_segment_as_the_ranks_left_them(steps):
    """The driver's snapshot path: chunks without parameters + the segment read as a file = full chunks,
    whichever of the segment's two parameter buffers the last step left current."""
    rng = np.random.default_rng(2)
    shapes = [p.shape for p in model().parameters()]
    grads = [[[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(2)] for _ in range(steps)]
    driver = model()
    name, groups = make_optimizer_spec(dg.optim.SGD(driver.parameters(), lr=0.1, momentum=0.9))
    hypers = [{k: v for k, v in groups[0].items() if k != "params"} for _ in shapes]
    group, replicas, done = f"t{uuid.uuid4().hex[:8]}", [model() for _ in range(2)], threading.Barrier(3)

    def rank_fn(rank):
        sp = ShardedParameters(list(replicas[rank].parameters()), rank, 2, group, name, hypers, timeout_s=10)
        sp.load([p.array.copy() for p in driver.parameters()], [{} for _ in shapes], 0)
        for step in grads:
            sp.step(step[rank])
        assert sp.current == steps % 2
        assert all(np.shares_memory(p.array, sp.buffers[sp.current]) for p in replicas[rank].parameters())
        chunks = sp.state_chunk(), sp.state_chunk(params=False)
        done.wait(10)  # the observer reads while the segment exists and no rank writes
        done.wait(10)
        sp.close()
        return chunks

    flat = []

    def observe():
        done.wait(10)
        flat.append(read_parameters(group, 2, shapes, np.float32))
        done.wait(10)

    reader = threading.Thread(target=observe)
    reader.start()
    results = run_ranks(2, rank_fn)
    reader.join(10)
    full = assemble([c for c, _ in results], shapes)
    lean = assemble([c for _, c in results], shapes, flat=flat[0])
    assert all("params" not in c for _, c in results)
    assert full[0] == lean[0] == steps
    assert all(np.array_equal(a, b) for a, b in zip(full[1], lean[1]))
    assert all(np.array_equal(a, p.array) for a, p in zip(full[1], replicas[0].parameters()))
    assert all(np.array_equal(a["momentum_buffer"], b["momentum_buffer"]) for a, b in zip(full[2], lean[2]))
    assert read_parameters(group, 2, shapes, np.float32) is None  # gone with the group: the caller falls back


@pytest.mark.parametrize("world", [2, 3])
def test_buckets_reduced_while_backward_runs_give_the_same_bits(world):
    """Tiny buckets (one per parameter): gradients handed over one by one, last parameter first, as
    backward makes them; every bucket but the last is reduced on the background thread before `step`,
    and the parameters equal the local optimizer's bit for bit. One rank hands its gradients only to
    `step` (no hook): the ranks still cross the same barriers in the same order."""
    rng = np.random.default_rng(1)
    steps = 3
    grads = [[[rng.standard_normal(p.shape).astype(np.float32) for p in model().parameters()] for _ in range(world)]
             for _ in range(steps)]  # fmt: skip
    reference = model()
    ref_opt = dg.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    for t in range(steps):
        for p, g in zip(reference.parameters(), combine_gradients(grads[t])):
            p.grad = dg.tensor(g)
        ref_opt.step()
    driver = model()
    name, groups = make_optimizer_spec(dg.optim.SGD(driver.parameters(), lr=0.1, momentum=0.9))
    hypers = [{k: v for k, v in groups[0].items() if k != "params"} for _ in driver.parameters()]
    group = f"t{uuid.uuid4().hex[:8]}"
    replicas = [model() for _ in range(world)]

    def rank_fn(rank):
        params = list(replicas[rank].parameters())
        sharded = ShardedParameters(params, rank, world, group, name, hypers, timeout_s=10, bucket_mb=1e-9)
        sharded.load([p.array.copy() for p in driver.parameters()], [{} for _ in params], version=0)
        overlapped = []
        for t in range(steps):
            if rank != world - 1:
                for i in reversed(range(len(params))):
                    sharded.grad_ready(i, grads[t][rank][i])
            sharded.step(grads[t][rank])
            overlapped.append(sharded.overlapped)
        values = [p.array.copy() for p in params]
        sharded.close()
        return overlapped, values

    results = run_ranks(world, rank_fn)
    n_params = len(list(driver.parameters()))
    for rank, (overlapped, values) in enumerate(results):
        assert overlapped == [0 if rank == world - 1 else n_params - 1] * steps
        assert all(np.array_equal(r.array, v) for r, v in zip(reference.parameters(), values))


def test_a_gradient_given_twice_or_misshaped_is_a_clear_error():
    m = model()
    params = list(m.parameters())
    name, groups = make_optimizer_spec(dg.optim.SGD(params, lr=0.1))
    hypers = [{k: v for k, v in groups[0].items() if k != "params"} for _ in params]
    sharded = ShardedParameters(params, 0, 1, f"t{uuid.uuid4().hex[:8]}", name, hypers, bucket_mb=1e-9)
    try:
        sharded.grad_ready(1, np.zeros(7, np.float32))
        with pytest.raises(DistributedError, match=r"gradient of parameter 1 \(7,\) was given twice"):
            sharded.grad_ready(1, np.zeros(7, np.float32))
        with pytest.raises(DistributedError, match=r"gradient of parameter 0 \(7, 5\) has shape \(5, 7\)"):
            sharded.grad_ready(0, np.zeros((5, 7), np.float32))
    finally:
        sharded.close()


@pytest.mark.parametrize("world", [1, 2, 3])
def test_a_parameter_no_rank_used_keeps_its_value_and_state_one_some_ranks_used_is_updated(world):
    """torch's optimizer skips a parameter whose grad is None (DDP leaves a globally unused one None):
    Adam's weight decay and moments must not move it. Parameter 0 is unused on every rank, parameter 2
    on rank 0 only (the others' gradient still counts)."""
    rng = np.random.default_rng(1)
    shapes = [p.shape for p in model().parameters()]
    unused = [{0, 2} if rank == 0 else {0} for rank in range(world)]
    grads = [[rng.standard_normal(s).astype(np.float32) * (i not in unused[r]) for i, s in enumerate(shapes)]
             for r in range(world)]  # fmt: skip

    def make_opt(params):
        return dg.optim.Adam(params, lr=0.01, weight_decay=0.1)

    reference = model()
    ref_opt = make_opt(reference.parameters())
    for _ in range(2):
        summed = combine_gradients(grads)
        for i, (p, g) in enumerate(zip(reference.parameters(), summed)):
            p.grad = None if all(i in u for u in unused) else dg.tensor(g)
        ref_opt.step()
    name, groups = make_optimizer_spec(make_opt(model().parameters()))
    hypers = [{k: v for k, v in groups[0].items() if k != "params"} for _ in shapes]
    group = f"t{uuid.uuid4().hex[:8]}"
    replicas = [model() for _ in range(world)]
    start = [p.array.copy() for p in model().parameters()]  # made here: ranks seeding the global RNG at once
    # in their threads drew each other's numbers (a rank started from other parameters, now and then)

    def rank_fn(rank):
        sharded = ShardedParameters(list(replicas[rank].parameters()), rank, world, group, name, hypers, timeout_s=10)
        sharded.load([a.copy() for a in start], [{} for _ in shapes], version=0)
        for _ in range(2):
            sharded.step(grads[rank], unused=unused[rank])
        chunk = sharded.state_chunk()
        sharded.close()
        return chunk

    _, params, states = assemble(run_ranks(world, rank_fn), shapes)
    np.testing.assert_array_equal(params[0], next(iter(model().parameters())).array)  # untouched
    for i, (ref, got) in enumerate(zip(reference.parameters(), params)):
        np.testing.assert_array_equal(got, ref.array, err_msg=f"parameter {i}")
    ref_state = ref_opt.state_dict()["state"]
    assert states[0] == {} and all(set(st) == set(ref_state.get(i, {})) for i, st in enumerate(states))


def test_a_rank_whose_step_raised_makes_its_peers_give_up_at_once_and_they_still_close_cleanly():
    """Rank 1's step raised (a NaN in its shard): it aborts, and rank 0, waiting in the step's barrier,
    raises an error naming it instead of waiting out its 30 s timeout. Rank 0 then closes: its model
    copies the parameters out of the segment, which giving up used to unmap first (a SIGSEGV in close)."""
    shapes = [p.shape for p in model().parameters()]
    name, groups = make_optimizer_spec(dg.optim.SGD(model().parameters(), lr=0.1))
    hypers = [{k: v for k, v in groups[0].items() if k != "params"} for _ in shapes]
    group, replicas = f"t{uuid.uuid4().hex[:8]}", [model() for _ in range(2)]
    start = [p.array.copy() for p in model().parameters()]

    def rank_fn(rank):
        params = list(replicas[rank].parameters())
        sharded = ShardedParameters(params, rank, 2, group, name, hypers, timeout_s=30)
        sharded.load(start, [{} for _ in shapes], version=0)
        if rank == 1:
            sharded.abort()
            sharded.close()
            return None
        try:
            with pytest.raises(DistributedError, match=r"rank\(s\) \[1\] stopped: their step raised"):
                sharded.step([np.ones(s, np.float32) for s in shapes])
        finally:
            sharded.close()
        return [p.array.copy() for p in params]

    values = run_ranks(2, rank_fn)[0]
    assert all(np.array_equal(a, b) for a, b in zip(values, start))  # the step was not applied
