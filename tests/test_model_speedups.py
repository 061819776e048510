"""The fast paths of the fourth pass (docs/performance.md) against the slower forms they replace."""

import numpy as np
import pytest

from hw.tile.params import SMALL
from sw.golden import arith as g
from sw.loopnest import LoopNest
from sw.model import fp32, pcu
from sw.model.pmu import PmuModel
from sw.runtime.chip import Pattern
from sw.tile.pmu import AddressPattern, PmuConfig, ReadMode
from tests.test_fp32_model import patterns


def _operands(rng, shape, kind):
    """Random fp32 patterns: normal values (kind 0), with zeros (1), any exponent (2), with NaN, infinities and
    subnormals (3)."""
    x = rng.standard_normal(shape).astype(np.float32).view(np.uint32).copy()
    if kind >= 1:
        x[rng.random(shape) < 0.1] = 0
    if kind >= 2:
        x = (x & np.uint32(0x807FFFFF)) | (rng.integers(0, 255, shape).astype(np.uint32) << np.uint32(23))
    if kind >= 3:
        odd = rng.random(shape) < 0.05
        x[odd] = rng.choice(np.array([0x7F800000, 0xFF800000, 0x7FC00001, 1, 0x80000005, 0x00800000], np.uint32),
                            int(odd.sum()))
    return x


@pytest.mark.parametrize("kind", range(4))
def test_dot_one_row_matches_the_ordered_sum(kind):
    # The systolic GEMV's shape (groups, m, 1, 1) x (groups, m, 1, lanes) takes _dot_rows: the same bits as the
    # step-by-step ordered sum, whether the operands, the products or neither show the sums cannot be subnormal.
    rng = np.random.default_rng(kind)
    for trial in range(60):
        groups, m, lanes = int(rng.integers(1, 9)), int(rng.integers(1, 40)), int(rng.choice([1, 2, 4, 8]))
        a, b = _operands(rng, (groups, m, 1, 1), kind), _operands(rng, (groups, m, 1, lanes), kind)
        if trial % 7 == 0:
            a[:] = 0
        if trial % 11 == 0:
            # Tiny products from normal operands: the operands do not settle it, the products do.
            a = (a & np.uint32(0x807FFFFF)) | np.uint32(20 << 23)
        want = fp32._ordered(fp32.daz(a), fp32.daz(b), np.broadcast_shapes(a.shape, b.shape))
        got = fp32.dot(a, b)
        assert got.shape == want.shape == (groups, 1, lanes)
        assert np.array_equal(got, want), (groups, m, lanes, trial)


def test_coarse_products_bound():
    # e_a + e_b >= 151 keeps every nonzero product at 2**-103 or above; one exponent step less does not.
    least = lambda exponent: (exponent << 23) - 1
    assert fp32._coarse_products(least(76), least(75))
    assert not fp32._coarse_products(least(75), least(75))
    a, b = np.uint32(76 << 23), np.uint32(75 << 23)
    assert fp32.mul(a, b) & np.uint32(0x7FFFFFFF) >= fp32._COARSE
    assert fp32._coarse_products(0xFFFFFFFF, least(1)) and not fp32._coarse_products(None, least(200))


@pytest.mark.parametrize("bias", [0x0, 0x80000000])
def test_identity_scalar_post_matches_multiply_add(bias):
    rng = np.random.default_rng(bias >> 31)
    x = patterns(rng, 50_000)
    want = g.fp32_add(g.fp32_mul(x, np.uint32(0x3F800000)), np.uint32(bias))
    assert np.array_equal(pcu._identity_post(x, np.uint32(bias)), want)
    assert np.array_equal(fp32.add(fp32.mul(x, np.uint32(0x3F800000)), np.uint32(bias)), want)


@pytest.mark.parametrize("config", [
    PmuConfig(write=AddressPattern.linear(8, SMALL.lanes), read=AddressPattern.linear(2, SMALL.lanes),
              read_mode=ReadMode.COLUMN, stripe=True),
    PmuConfig(write=AddressPattern.linear(8, SMALL.lanes), read=AddressPattern.linear(4, 2 * SMALL.lanes)),
    PmuConfig(write=AddressPattern.linear(4, SMALL.lanes), read=AddressPattern.linear(4, SMALL.lanes),
              reads_per_fill=3),
], ids=["column", "strided", "repeated"])
def test_pmu_gather_without_zeros_matches_run(config):
    # Outputs that show only write words (no bank zero) are gathered straight from the write vectors.
    rng = np.random.default_rng(5)
    model = PmuModel(SMALL, config)
    for n in (4, 8, 16):
        m = rng.integers(0, 1 << 32, (n, SMALL.lanes), dtype=np.uint64).astype(np.uint32)
        want = PmuModel(SMALL, config).run(m)
        vo0, last, errors, cycles = model.gather(m)
        assert np.array_equal(vo0, want.vo0) and np.array_equal(last, want.last)
        assert (errors, cycles) == (want.errors, want.cycles)
    assert any(isinstance(source, tuple) for source in model._sources.values())
    if config.reads_per_fill > 1:
        assert any(source[0] == "tile" for source in model._sources.values() if isinstance(source, tuple))


def test_moved_pattern_equals_a_new_one():
    nest = LoopNest((4, 3), (1, 16), last_level=0)
    p = Pattern(1, 64, nest, True, 2, 1)
    moved = p.moved(4096)
    assert moved == Pattern(1, 4096, nest, True, 2, 1) and hash(moved) == hash(Pattern(1, 4096, nest, True, 2, 1))
    assert p.base == 64 and moved.fields(16)["base"] == 4096


def test_session_patterns_match_the_launches(tmp_path):
    from sw.compiler.compile import compile_model
    from sw.runtime.decode import Session
    from sw.runtime.device import ModelDevice
    from sw.target import CHIP
    from tests.llama_checkpoints import SHAPES, make_checkpoint

    compiled = compile_model(make_checkpoint(tmp_path, **SHAPES["tiny-tied"]), CHIP, mode="fused", context=32)
    session = Session(ModelDevice(CHIP), compiled)
    for launches in compiled.buckets.values():
        for launch in launches:
            for token, pos in ((0, 0), (7, 3), (1, 31)):
                assert session._patterns(launch, token, pos) == launch.patterns(token, pos)


@pytest.mark.parametrize("target_name", ["chip", "4x8"])
def test_replayed_decode_matches_step_by_step(tmp_path, monkeypatch, target_name):
    # Every launch replayed from its plan (gated launches running only the units each pass needs) gives the
    # logits and cycles of every launch run step by step.
    import asyncio

    from sw.compiler.compile import compile_model
    from sw.model.chip import ChipModel
    from sw.runtime.decode import generate
    from sw.runtime.device import ModelDevice
    from sw.target import CHIP, LARGE
    from tests.llama_checkpoints import SHAPES, make_checkpoint

    target = {"chip": CHIP, "4x8": LARGE}[target_name]
    compiled = compile_model(make_checkpoint(tmp_path, **SHAPES["tiny-tied"]), target, mode="fused", context=32)
    run = lambda: asyncio.run(generate(ModelDevice(target), compiled, [1, 5, 9], max_new_tokens=3,
                                       stop_at_eos=False, keep_logits=True))
    replayed = run()
    replays = []
    original = ChipModel._replay
    monkeypatch.setattr(ChipModel, "_replay", lambda self, *a: replays.append(1) or original(self, *a))
    again = run()
    assert replays, "the second decode replays its launches"
    monkeypatch.setattr(ChipModel, "_replay", lambda self, *a: None)
    slow = run()
    for fast in (replayed, again):
        assert np.array_equal(fast["logits"], slow["logits"]) and fast["tokens"] == slow["tokens"]
        assert fast["step_cycles"] == slow["step_cycles"]


@pytest.mark.parametrize("name", ["exp", "recip", "rsqrt", "sigmoid", "silu"])
def test_scalar_tails_match_the_golden_model(name):
    # Inputs of up to _SCALAR_MAX values run value by value on Python ints; larger ones on int64 arrays.
    from sw.golden import tail as golden
    from sw.model import tail

    rng = np.random.default_rng(7)
    x = patterns(rng, 20_000)
    one = getattr(tail, f"_{name}1")
    assert np.array_equal(tail._scalar(x, one), getattr(golden, name)(x))
    for n in (0, 1, 5, tail._SCALAR_MAX, tail._SCALAR_MAX + 1):
        assert np.array_equal(getattr(tail, name)(x[:n]), getattr(golden, name)(x[:n]))
    assert getattr(tail, name)(x[3]).shape == getattr(golden, name)(x[3]).shape == ()
