"""dg.Generator (torch.Generator's API over numpy streams), `generator=` on the random ops and the data
samplers, and the random ops' checks, each against torch where torch is deterministic."""

import numpy as np
import pytest

import distgraph as dg
from distgraph.data import DataLoader, IterableDataset, RandomSampler, random_split
from distgraph.data.dataset import ChainDataset
from distgraph.errors import DTypeError, InputRangeError, ShapeError

torch = pytest.importorskip("torch")


def test_generator_api_matches_torch():
    g, t = dg.Generator(), torch.Generator()
    assert g.initial_seed() == t.initial_seed() and str(g.device) == str(t.device) == "cpu"
    assert g.manual_seed(5) is g and t.manual_seed(5) is t
    assert g.manual_seed(-3).initial_seed() == t.manual_seed(-3).initial_seed() == 2**64 - 3
    with pytest.raises(InputRangeError, match=r"Generator.manual_seed: seed must lie in \[-2\*\*63, 2\*\*64\)"):
        g.manual_seed(2**64)
    s = g.seed()
    assert g.initial_seed() == s and 0 <= s < 2**63


def test_same_seed_same_draws_and_state_replays():
    a, b = dg.Generator().manual_seed(7), dg.Generator().manual_seed(7)
    np.testing.assert_array_equal(dg.randn(4, generator=a).numpy(), dg.randn(4, generator=b).numpy())
    state = a.get_state()
    assert state.dtype == dg.uint8 and state.ndim == 1
    first = dg.rand(3, generator=a).numpy()
    assert not np.array_equal(first, dg.rand(3, generator=a).numpy())
    np.testing.assert_array_equal(dg.rand(3, generator=dg.Generator().set_state(state)).numpy(), first)
    assert a.set_state(state) is a and a.initial_seed() == 7
    np.testing.assert_array_equal(dg.rand(3, generator=a).numpy(), first)


def test_set_state_refuses_what_get_state_did_not_give():
    g = dg.Generator()
    with pytest.raises(DTypeError, match="Generator.set_state: RNG state must be the 1-d uint8 tensor"):
        g.set_state(dg.zeros(3))
    with pytest.raises(InputRangeError, match="Generator.set_state: not a state"):
        g.set_state(dg.tensor([1, 2, 3], dtype=dg.uint8))
    with pytest.raises(TypeError, match="RNG state must be a torch.ByteTensor"):  # torch refuses as well
        torch.Generator().set_state(torch.zeros(3))


def test_manual_seed_returns_the_default_generator_as_torch():
    assert torch.manual_seed(1) is torch.default_generator
    assert dg.manual_seed(1) is dg.default_generator and dg.default_generator.initial_seed() == 1
    state = dg.default_generator.get_state()
    a = dg.randn(3).numpy()
    dg.default_generator.set_state(state)
    np.testing.assert_array_equal(dg.randn(3).numpy(), a)
    assert dg.default_generator.manual_seed(4) is dg.default_generator and dg.initial_seed() == 4


def _draws(gen):
    """One of each random op, drawn from `gen` (None: the global generator)."""
    x, p = dg.zeros(2, 3), dg.tensor([[0.2, 0.3, 0.5], [0.6, 0.4, 0.0]])
    return [
        dg.rand(3, generator=gen),
        dg.randn(2, 2, generator=gen),
        dg.randint(0, 9, (4,), generator=gen),
        dg.randperm(5, generator=gen),
        dg.normal(0.0, 2.0, (3,), generator=gen),
        dg.normal(x, 1.0, generator=gen),
        dg.bernoulli(dg.full((4,), 0.5), generator=gen),
        dg.multinomial(p, 2, generator=gen),
        dg.multinomial(p, 5, True, generator=gen),
        dg.rand_like(x, generator=gen),
        dg.randn_like(x, generator=gen),
        dg.randint_like(x, 5, generator=gen),
        dg.poisson(dg.full((3,), 2.0), generator=gen),
        dg.binomial(dg.full((3,), 5.0), dg.full((3,), 0.5), generator=gen),
        *(_in_place(name, args, gen) for name, args in _IN_PLACE),
    ]


# the Tensor's in-place samplers, each with torch's generator= keyword (ops/rng.py's takes_generator)
_IN_PLACE = [("uniform_", (-1.0, 1.0)), ("normal_", (0.0, 2.0)), ("bernoulli_", (0.3,)), ("exponential_", ()),
             ("cauchy_", ()), ("log_normal_", ()), ("geometric_", (0.4,)), ("random_", (0, 7))]  # fmt: skip


def _in_place(name, args, gen):
    return getattr(dg.zeros(5, dtype=dg.float64), name)(*args, generator=gen)


def test_generator_keyword_on_every_op_replays_and_leaves_the_global_stream():
    dg.manual_seed(0)
    expected_global = dg.randn(4).numpy()
    dg.manual_seed(0)
    one = _draws(dg.Generator().manual_seed(3))
    two = _draws(dg.Generator().manual_seed(3))
    np.testing.assert_array_equal(dg.randn(4).numpy(), expected_global)  # not advanced by the draws above
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    dg.manual_seed(11)
    with_global = _draws(None)
    dg.manual_seed(11)
    with_default = _draws(dg.default_generator)
    for a, b in zip(with_global, with_default, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_generator_keyword_refuses_other_objects():
    with pytest.raises(DTypeError, match="rand: generator must be a distgraph.Generator, got int"):
        dg.rand(2, generator=3)
    with pytest.raises(DTypeError, match="multinomial: generator must be a distgraph.Generator, got Generator"):
        dg.multinomial(dg.ones(3), 1, generator=np.random.default_rng(0))
    with pytest.raises(TypeError):
        torch.rand(2, generator=3)


def test_loader_sampler_and_split_take_a_generator():
    ds = list(range(10))

    def order():
        return [b.tolist() for b in DataLoader(ds, batch_size=3, shuffle=True, generator=dg.Generator().manual_seed(0))]

    assert order() == order() and sorted(sum(order(), [])) == ds
    assert list(RandomSampler(ds, generator=dg.Generator().manual_seed(2))) == list(
        RandomSampler(ds, generator=dg.Generator().manual_seed(2))
    )
    g = dg.Generator().manual_seed(1)
    first = [s.indices for s in random_split(ds, [5, 5], generator=g)]
    assert first != [s.indices for s in random_split(ds, [5, 5], generator=g)]  # the split advanced g
    assert first == [s.indices for s in random_split(ds, [5, 5], generator=dg.Generator().manual_seed(1))]
    dg.manual_seed(4)
    a = list(RandomSampler(ds, generator=dg.default_generator))
    dg.manual_seed(4)
    assert list(RandomSampler(ds)) == a  # the default generator: the global stream, read per epoch


def test_randint_high_size_form_and_empty_range_as_torch():
    out = dg.randint(5, (3,))
    assert tuple(out.shape) == tuple(torch.randint(5, (3,)).shape) and out.dtype == dg.int64
    assert all(0 <= v < 5 for v in out.tolist())
    assert all(0 <= v < 5 for v in dg.randint(5, size=(4,)).tolist())
    with pytest.raises(RuntimeError, match="from=3 >= to=3"):
        torch.randint(3, 3, (2,))
    with pytest.raises(InputRangeError, match="randint expects 'low' to be less than 'high', but got low=3 >= high=3"):
        dg.randint(3, 3, (2,))
    with pytest.raises(DTypeError, match="randint: missing size"):
        dg.randint(5)


def test_multinomial_without_replacement_runs_out_of_nonzero_weights_as_torch():
    for seed in range(5):
        t = torch.multinomial(torch.tensor([0.0, 1.0, 0.0]), 2, generator=torch.Generator().manual_seed(seed))
        g = dg.Generator().manual_seed(seed)
        assert dg.multinomial(dg.tensor([0.0, 1.0, 0.0]), 2, generator=g).tolist() == t.tolist() == [1, 0]
    rows = dg.multinomial(dg.tensor([[0.0, 1.0, 0.0, 2.0]]), 4).tolist()[0]
    assert sorted(rows[:2]) == [1, 3] and sorted(rows) == [0, 1, 2, 3]  # nonzero weights first, then the rest


@pytest.mark.parametrize(
    ("probs", "n", "replacement", "error", "match"),
    [
        ([0.0, -1.0, 0.0], 1, False, InputRangeError, "multinomial: probability tensor contains either `inf`, `nan`"),
        ([0.0, float("nan")], 1, True, InputRangeError, "multinomial: probability tensor contains either `inf`, `nan`"),
        ([[1.0, 1.0], [0.0, 0.0]], 1, False, InputRangeError, r"multinomial: invalid multinomial distribution \(sum"),
        ([0.0, 1.0, 0.0], 4, False, InputRangeError, "multinomial: cannot sample num_samples=4 from 3 categories"),
        ([1.0, 1.0], 0, True, InputRangeError, "multinomial: cannot sample num_samples=0"),
        (1.0, 1, False, ShapeError, "multinomial: prob_dist must be 1 or 2 dim"),
        ([1, 1], 1, False, DTypeError, "multinomial only supports floating-point dtypes"),
    ],
)
def test_multinomial_refuses_what_torch_refuses(probs, n, replacement, error, match):
    with pytest.raises(RuntimeError):
        torch.multinomial(torch.tensor(probs), n, replacement)
    with pytest.raises(error, match=match):
        dg.multinomial(dg.tensor(probs), n, replacement)


@pytest.mark.parametrize("p", [1.5, -0.5, float("nan")])
def test_bernoulli_refuses_probabilities_outside_0_1_as_torch(p):
    with pytest.raises(RuntimeError, match="p_in >= 0 && p_in <= 1"):
        torch.bernoulli(torch.tensor([p]))
    with pytest.raises(InputRangeError, match=r"bernoulli: expected every probability in \[0, 1\]"):
        dg.bernoulli(dg.tensor([p]))
    with pytest.raises(InputRangeError, match=r"bernoulli expects p to be in \[0, 1\], but got p=1.5"):
        dg.bernoulli(dg.zeros(2), 1.5)
    assert dg.bernoulli(dg.ones(3)).tolist() == torch.bernoulli(torch.ones(3)).tolist()


def test_randperm_refuses_a_negative_n_as_torch():
    with pytest.raises(RuntimeError, match="negative dimension -1"):
        torch.randperm(-1)
    with pytest.raises(ShapeError, match=r"randperm: Trying to create tensor with negative dimension -1"):
        dg.randperm(-1)
    assert dg.randperm(0).tolist() == torch.randperm(0).tolist() == []


def _range_dataset(base):
    """An IterableDataset class (subclassing `base`, distgraph's or torch's) whose samples are range(*bounds)."""

    class Range(base):
        def __init__(self, *bounds):
            self.bounds = bounds

        def __iter__(self):
            return iter(range(*self.bounds))

        def __len__(self):
            return len(range(*self.bounds))

    return Range


_Range, _TorchRange = _range_dataset(IterableDataset), _range_dataset(torch.utils.data.IterableDataset)


def test_chain_dataset_as_torch():
    ours, theirs = (
        ChainDataset([_Range(3), _Range(5, 7)]),
        torch.utils.data.ChainDataset([_TorchRange(3), _TorchRange(5, 7)]),
    )
    assert list(ours) == list(theirs) == [0, 1, 2, 5, 6] and len(ours) == len(theirs) == 5
    assert list(_Range(2) + _Range(4, 5)) == list(_TorchRange(2) + _TorchRange(4, 5)) == [0, 1, 4]
    assert [b.tolist() for b in DataLoader(ours, batch_size=2)] == [[0, 1], [2, 5], [6]]
    with pytest.raises(DTypeError, match="ChainDataset only supports IterableDataset, got list at position 1"):
        list(ChainDataset([_Range(1), [1, 2]]))


def test_a_loader_reads_its_generators_stream_at_each_epoch_as_torchs():
    """`g.manual_seed(s)` each epoch, or `g.set_state(saved)` on resume, gives the same order again (the loader
    kept the stream it found when it was built, which a reseed replaces)."""
    g = dg.Generator()
    loader = DataLoader(list(range(8)), batch_size=8, shuffle=True, generator=g)
    g.manual_seed(0)
    first = next(iter(loader))
    g.manual_seed(0)
    assert next(iter(loader)).tolist() == first.tolist()
    saved = g.get_state()
    after = next(iter(loader)).tolist()
    g.set_state(saved)
    assert next(iter(loader)).tolist() == after
    g.manual_seed(0)
    split = [list(s.indices) for s in random_split(list(range(6)), [3, 3], generator=g)]
    g.manual_seed(0)
    assert [list(s.indices) for s in random_split(list(range(6)), [3, 3], generator=g)] == split
