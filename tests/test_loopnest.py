"""The one loop-nest description (sw/loopnest.py): enumeration, validation, register encodings."""

import itertools

import numpy as np
import pytest

from facts.loopnest import LEVELS
from sw.loopnest import LoopNest, agcu_last_every, agcu_last_level


def brute_force(nest):
    """Addresses and marks by nested Python loops, outermost level first."""
    bounds, strides = nest.padded()
    addresses, ends = [], []
    for index in itertools.product(*(range(b) for b in reversed(bounds))):
        i = index[::-1]
        addresses.append(nest.offset + sum(s * k for s, k in zip(strides, i)))
        done = nest.last_level is not None and all(i[k] == bounds[k] - 1 for k in range(nest.last_level + 1))
        ends.append(done)
    return addresses, ends


def test_enumerator_matches_nested_loops():
    rng = np.random.default_rng(3)
    for _ in range(300):
        levels = int(rng.integers(1, LEVELS + 1))
        bounds = tuple(int(b) for b in rng.integers(0, 4, size=levels))
        strides = tuple(int(s) for s in rng.integers(-20, 20, size=levels))
        last_level = [None, *range(LEVELS)][int(rng.integers(0, LEVELS + 1))]
        nest = LoopNest(bounds, strides, offset=int(rng.integers(-50, 50)), last_level=last_level).check()
        addresses, ends = brute_force(nest)
        assert nest.addresses().dtype == np.int64 and nest.addresses().tolist() == addresses
        assert nest.ends().tolist() == ends
        assert nest.count == len(addresses)
        if addresses:
            assert nest.span() == (min(addresses), max(addresses))


def test_linear_and_padding():
    nest = LoopNest.linear(3, 4, offset=8)
    assert nest.addresses().tolist() == [8, 12, 16]
    assert nest.padded() == ((3, 1, 1, 1), (4, 0, 0, 0))
    assert nest.ends().tolist() == [False, False, True]
    assert not LoopNest.linear(3, last_level=None).ends().any()


@pytest.mark.parametrize("nest, min_bound, message", [
    (LoopNest((1,) * 5, (0,) * 5), 0, r"x\.bounds has 5 levels"),
    (LoopNest((), ()), 0, r"x\.bounds has 0 levels"),
    (LoopNest((2, 2), (1,)), 0, r"x\.strides has 1 entries for 2 bounds"),
    (LoopNest((0,), (1,)), 1, r"x\.bounds\[0\] is 0; every loop bound must be an integer in \[1, 65535\]"),
    (LoopNest((1 << 16,), (1,)), 0, r"x\.bounds\[0\] is 65536"),
    (LoopNest((2,), (1.5,)), 0, r"x\.strides\[0\] is 1\.5"),
    (LoopNest((2,), (1,), offset=None), 0, r"x\.offset is None"),
    (LoopNest((2,), (1,), last_level=LEVELS), 0, r"x\.last_level is 4"),
])
def test_check_names_the_field(nest, min_bound, message):
    with pytest.raises(ValueError, match=message):
        nest.check("x", min_bound=min_bound)


def test_agcu_last_encoding():
    # 0 marks only the final word, which an AGCU marks anyway: the outermost level encodes as 0 too.
    assert [agcu_last_every(k) for k in (None, 0, 1, 2, LEVELS - 1)] == [0, 1, 2, 3, 0]
    assert [agcu_last_level(e) for e in range(LEVELS + 1)] == [None, 0, 1, 2, 3]
