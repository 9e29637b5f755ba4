"""arena.place: buffers alive at the same time never share bytes, and the arena stays near the most
bytes alive at once."""

import numpy as np

from distgraph.graph.arena import ALIGN, place


def test_buffers_alive_together_get_disjoint_bytes_and_dead_ones_are_reused():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 40))
        sizes = [int(s) for s in rng.integers(1, 5000, n)]
        starts = rng.integers(0, 30, n)
        spans = [(int(a), int(a + rng.integers(0, 8))) for a in starts]
        offsets, total = place(sizes, spans)
        assert all(o % ALIGN == 0 for o in offsets)
        for i in range(n):
            assert offsets[i] + sizes[i] <= total
            for j in range(i):
                alive_together = spans[i][0] <= spans[j][1] and spans[j][0] <= spans[i][1]
                disjoint = offsets[i] + sizes[i] <= offsets[j] or offsets[j] + sizes[j] <= offsets[i]
                assert disjoint or not alive_together, (i, j)
        most_alive = max(sum(s for s, (a, b) in zip(sizes, spans) if a <= t <= b) for t in range(40))
        assert most_alive <= total <= 2 * most_alive + n * ALIGN


def test_a_chain_of_equal_buffers_needs_two_slots():
    """Each value is read by the next node only: value k and k+1 overlap at node k+1, k and k+2 never."""
    sizes = [1024] * 10
    spans = [(k, k + 1) for k in range(10)]
    offsets, total = place(sizes, spans)
    assert total == 2048 and set(offsets) == {0, 1024}


def test_no_buffers_need_no_arena():
    assert place([], []) == ([], 0)
