"""The fast model's shortcuts (one-pass group sums and max folds, PMU plans, flat tiers) equal the slow paths."""

import numpy as np
import pytest

from cosim.tb import timing_cases
from sw.golden import arith as g
from sw.loopnest import LoopNest
from sw.model import fp32
from sw.model import memory_units as mu
from sw.model.memory import FlatMemory, MemoryRangeError, SparseMemory
from sw.model.pmu import PmuModel
from hw.tile.params import SMALL as P
from tests.test_fp32_model import patterns


def ordered_sums(a, b):
    """``acc = a_j * b_j + acc`` from +0 along axis 1, one golden step at a time."""
    a, b = np.broadcast_arrays(a, b)
    acc = np.zeros(a.shape[:1] + a.shape[2:], np.uint32)
    for j in range(a.shape[1]):
        acc = g.fp32_add(g.fp32_mul(a[:, j], b[:, j]), acc)
    return acc


@pytest.mark.parametrize("kind", ["normal", "tiny", "special"])
@pytest.mark.parametrize("shape", [(3, 17, 2, 4), (1, 40, 1, 8), (4, 30, 1, 2), (1, 300, 2, 1), (5, 9, 1, 1),
                                   (1, 9, 1, 1), (2, 1, 4, 4)])
def test_dot_is_the_ordered_golden_sum(kind, shape):
    rng = np.random.default_rng(sum(shape))
    groups, m, rows, lanes = shape
    if kind == "special":
        a = patterns(rng, groups * m * rows)[:groups * m * rows].reshape(groups, m, rows, 1)
        b = patterns(rng, groups * m * lanes)[:groups * m * lanes].reshape(groups, m, 1, lanes)
    else:
        # Values spanning 2**+-20 (products from 2**-40 up), or near 2**-63 (products near the flush threshold).
        scale = 1.0 if kind == "normal" else 2.0 ** -63
        a = (rng.standard_normal((groups, m, rows, 1)) * scale * 2.0 ** rng.integers(-20, 20, (groups, m, rows, 1)))
        b = (rng.standard_normal((groups, m, 1, lanes)) * scale * 2.0 ** rng.integers(-20, 20, (groups, m, 1, lanes)))
        a, b = a.astype(np.float32).view(np.uint32), b.astype(np.float32).view(np.uint32)
        a[rng.random(a.shape) < 0.1] = 0x80000000
    assert np.array_equal(fp32.dot(a, b), ordered_sums(a, b))


def test_pmu_plans_are_per_run_shape_and_bases():
    # Runtime bases (some out of range) in runs of different lengths on one memory: a model reusing its
    # cached plans equals a fresh one, and both take the cycles the RTL PMU took (cosim/tb/timing_cases.py).
    config, runs = timing_cases.PMU["runtime_bases"]
    rng = np.random.default_rng(4)
    reused = PmuModel(P, config)
    for rows, si0, si1, rtl_cycles in runs:
        m = rng.integers(0, 1 << 32, (rows, P.lanes), dtype=np.uint64).astype(np.uint32)
        fresh = PmuModel(P, config, banks=reused.banks)
        want, got = fresh.run(m, list(si0), list(si1)), reused.run(m, list(si0), list(si1))
        assert np.array_equal(got.vo0, want.vo0) and np.array_equal(got.last, want.last)
        assert (got.errors, got.cycles, got.write_passes, got.read_passes) == \
            (want.errors, want.cycles, want.write_passes, want.read_passes)
        assert np.array_equal(reused.banks, fresh.banks)
        assert got.cycles == rtl_cycles


NESTS = [LoopNest((12,), (1,)), LoopNest((3, 4), (1, 5)), LoopNest((4, 3), (0, 2)), LoopNest((2, 3), (2, -1)),
         LoopNest((6,), (1,), last_level=None)]


@pytest.mark.parametrize("nest", NESTS, ids=str)
@pytest.mark.parametrize("base", [0x40, 0x1000 - 0x60, 0x1000 - 0x20])
def test_flat_tier_transfers_match_the_sparse_one(nest, base):
    capacity, wb = 0x1000, 16
    rng = np.random.default_rng(base)
    image = rng.integers(0, 256, capacity, dtype=np.uint8)
    flat, sparse = FlatMemory("hbm", capacity), SparseMemory("hbm", capacity)
    flat.write(0, image)
    sparse.write(0, image)
    for lanes in (2, 4, 8):
        for bf16 in (False, True):
            got = mu.transfer_read(flat, capacity, base, nest, lanes=lanes, word_bytes=wb, bf16=bf16)
            want = mu.transfer_read(sparse, capacity, base, nest, lanes=lanes, word_bytes=wb, bf16=bf16)
            assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
            assert (got[2].error, got[2].error_word, got[2].words) == (want[2].error, want[2].error_word,
                                                                      want[2].words)
    vectors = rng.integers(0, 1 << 32, (nest.count, wb // 4), dtype=np.uint64).astype(np.uint32)
    mu.transfer_write(flat, capacity, base, nest, vectors, word_bytes=wb)
    mu.transfer_write(sparse, capacity, base, nest, vectors, word_bytes=wb)
    assert np.array_equal(flat.read(0, capacity), sparse.read(0, capacity))
    with pytest.raises(MemoryRangeError, match=r"hbm: bytes \[0xff0, 0x1010\)"):
        flat.write(capacity - 16, bytes(32))


def test_max_fold_is_the_golden_fold_in_arrival_order():
    from sw.model.pcu import PcuModel, _group_ids
    from sw.tile.pcu import PcuConfig

    model = PcuModel(P, PcuConfig(inputs=(0,), so="group", reduce="max"))
    rng = np.random.default_rng(1)
    for trial in range(200):
        n = int(rng.integers(1, 40))
        x = patterns(rng, n)[-n:] if trial % 2 else patterns(rng, n)[:n]   # the tail holds NaNs, -0, subnormals
        last = rng.random(n) < 0.3
        last[-1] = True
        group, groups = _group_ids(last)
        starts = np.flatnonzero(np.r_[True, last[:-1]])
        want = []
        for start, end in zip(starts, np.flatnonzero(last)):
            acc = x[start]
            for j in range(start + 1, end + 1):
                acc = g.fp32_max(acc, x[j])
            want.append(acc)
        assert np.array_equal(model._fold(x, group, groups), np.array(want, np.uint32))
