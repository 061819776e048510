"""Constrained-random kernels (sw/tile/random_kernels.py) on the fast model against the independent reference.

Also: the reference's arithmetic against exact rationals, kernels reproducible
from their seeds, and deliberately wrong models that the random kernels catch.
The RTL runs the same kernels in the ``pcu`` and ``array`` cocotb units.
"""

from fractions import Fraction

import numpy as np
import pytest

from sw.golden import arith as g
from sw.model import fp32, pcu as pcu_model
from sw.tile import oracle
from sw.tile import random_kernels as rk
from sw.tile.kernels import TEST_POST, TEST_TAIL
from tests.test_golden_arith import frac_of32, rne

PCU_KERNELS = 300
ARRAY_KERNELS = {"small": 40, "3x4": 15, "2x4x8": 15}


def _repro(kind, seed, params="small"):
    return f"seed {seed}: python -m sw.tile.random_kernels {kind} {seed} --params {params}"


def test_reference_arithmetic_is_exact_rational_rounding():
    rng = np.random.default_rng(5)
    a, b = (rk.values(rng, (3000,), np.full(len(rk.CLASSES), 1 / len(rk.CLASSES))) for _ in range(2))
    for op, exact in (("mul", lambda x, y: x * y), ("add", lambda x, y: x + y)):
        got = getattr(oracle, op)(a, b)
        for x, y, r in zip(a, b, got):
            fx, fy = frac_of32(x), frac_of32(y)
            if fx is None or fy is None:
                continue
            v = exact(fx, fy)
            # An exact zero sum is +0 unless both are -0; a zero product takes the XOR sign.
            neg = (op == "mul" and (int(x) ^ int(y)) >> 31 == 1) or (op == "add" and int(x) >> 31 and int(y) >> 31)
            assert int(r) == rne(v, 24, neg_zero=bool(neg)), f"{op}({int(x):#x}, {int(y):#x}) = {int(r):#x}"


def test_kernels_are_reproducible_from_their_seed():
    a, b = rk.array_kernel(17), rk.array_kernel(17)
    assert a.program.words == b.program.words and a.inputs.keys() == b.inputs.keys()
    assert all(np.array_equal(a.inputs[k][0], b.inputs[k][0]) for k in a.inputs)
    p, q = rk.pcu_kernel(17), rk.pcu_kernel(17)
    assert p.config == q.config and all(np.array_equal(p.vi[k][0], q.vi[k][0]) for k in p.vi)
    assert rk.pcu_kernel(18).config != p.config


def test_pcu_kernels_model_against_reference():
    census, coverage, failed = oracle.Census(), rk.Coverage(), []
    for seed in range(PCU_KERNELS):
        kernel = rk.pcu_kernel(seed)
        coverage.pcu_kernel(kernel)
        problems = rk.check_pcu(kernel, census)
        if problems:
            failed.append(f"{_repro('pcu', seed)}: {problems[0]}")
    assert not failed, f"{len(failed)} of {PCU_KERNELS} kernels differ:\n" + "\n".join(failed[:10])
    coverage.census(census)
    _, holes, _ = coverage.report()
    assert not [h for h in holes if h.split("/")[0] in ("op", "source", "tail", "so_func", "special",
                                                        "scalar_out", "scalar_in", "mode")], holes


@pytest.mark.parametrize("params", sorted(ARRAY_KERNELS))
def test_array_kernels_model_against_reference(params):
    failed, templates = [], set()
    for seed in range(ARRAY_KERNELS[params]):
        kernel = rk.array_kernel(seed, params)
        templates.add(kernel.template)
        problems = rk.check_array(kernel)
        if problems:
            failed.append(f"{_repro('array', seed, params)}: {problems[0]}")
    assert not failed, "\n".join(failed[:10])
    assert len(templates) >= 4, templates


def test_array_kernels_respect_the_built_tail_functions():
    for seed in range(10):
        kernel = rk.array_kernel(seed, "small", TEST_TAIL, TEST_POST)
        for u in kernel.program.units.values():
            if u.kind == "pcu":
                built = {op.name.lower() for op in TEST_TAIL.get(u.pos, ())} | {"none"}
                assert u.config.tail in built, (seed, u.pos, u.config.tail)
        assert not rk.check_array(kernel)


def _caught(kinds, seeds=200):
    """The first (kind, seed) whose check fails, or None."""
    for seed in range(seeds):
        for kind in kinds:
            problems = rk.check_pcu(rk.pcu_kernel(seed)) if kind == "pcu" else rk.check_array(rk.array_kernel(seed))
            if problems:
                return kind, seed, problems
    return None


def test_a_model_without_denormals_are_zero_is_caught(monkeypatch):
    monkeypatch.setattr(fp32, "daz", lambda x: np.asarray(x, dtype=np.uint32))
    found = _caught(("pcu",))
    assert found, "a model that keeps subnormal inputs passed 200 random kernels"


def test_a_model_that_rounds_ties_away_is_caught(monkeypatch):
    add = fp32.add

    def away(a, b, sub=False):
        # Correct result, moved one ulp away from zero when the exact sum lies halfway (a tie).
        r = add(a, b, sub)
        exact = oracle.value(a) + (-oracle.value(b) if sub else oracle.value(b))
        with np.errstate(all="ignore"):
            m, _ = np.frexp(exact)
            s = m * 2.0 ** 24
            tie = np.isfinite(exact) & (np.abs(s - np.floor(s)) == 0.5) & (np.abs(r.view(np.float32)) < np.abs(exact))
        return np.where(tie, r + np.uint32(1), r).astype(np.uint32)

    monkeypatch.setattr(fp32, "add", away)
    assert _caught(("pcu",)), "a model that rounds ties away from zero passed 200 random kernels"


def test_a_model_with_a_sequential_lane_reduction_is_caught(monkeypatch):
    def sequential(op, x):
        acc = x[:, 0]
        for lane in range(1, x.shape[1]):
            acc = fp32.add(acc, x[:, lane]) if op == "sum" else g.fp32_max(acc, x[:, lane])
        return acc

    monkeypatch.setattr(pcu_model, "reduce_lanes", sequential)
    assert _caught(("pcu",), seeds=400), "a model that sums lanes in order passed 400 random kernels"


def test_exact_reference_catches_a_single_ulp():
    # The oracle is the judge: one ulp off in one lane of one output must show.
    kernel = rk.pcu_kernel(3)

    class OffByOne(pcu_model.PcuModel):
        def run(self, vi, si=None):
            r = super().run(vi, si)
            if r.vo.size:
                r.vo = r.vo.copy()
                r.vo.flat[0] ^= np.uint32(1)
            if r.so.size:
                r.so = r.so.copy()
                r.so[0] ^= np.uint32(1)
            return r

    assert rk.check_pcu(kernel, model=OffByOne)


def test_rounding_reference_self_check():
    assert int(oracle.round_bits(1 + 2.0 ** -24)) == 0x3F800000
    assert int(oracle.round_bits(1 + 3 * 2.0 ** -24)) == 0x3F800002
    assert int(oracle.round_bits(-(2.0 ** -127))) == 0x80000000
    assert int(oracle.round_bits(2.0 ** -126 * (1 - 2.0 ** -25))) == 0x00800000
    assert int(oracle.round_bits(2.0 ** 128 * (1 - 2.0 ** -25))) == 0x7F800000
    assert int(oracle.round_bits(float("nan"))) == oracle.NAN_BITS
    assert int(oracle.round_bits(1 + 2.0 ** -8, p=8)) == 0x3F800000
    assert rne(Fraction(3, 2), 24) == int(oracle.round_bits(1.5))
