"""The fast paths of the fourth pass (docs/performance.md) against the slower forms they replace."""

import os

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
        special = [0x7F800000, 0xFF800000, 0x7FC00001, 1, 0x80000005, 0x00800000, 0x80000000]
        x[odd] = rng.choice(np.array(special, np.uint32), int(odd.sum()))
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


# The fifth pass (docs/performance.md): GEMVs with a shared activation, one-reduction maxima, stage results not
# checked again, scalar posts on Python ints.

@pytest.mark.parametrize("kind", range(4))
def test_dot_shared_matches_the_ordered_sum(kind):
    # One activation row for every group gives the bits of the general GEMV on that row repeated.
    rng = np.random.default_rng(10 + kind)
    for trial in range(60):
        groups, m, lanes = int(rng.integers(1, 9)), int(rng.integers(0, 40)), int(rng.choice([1, 2, 4, 8]))
        a, b = _operands(rng, (m,), kind), _operands(rng, (groups, m, lanes), kind)
        if trial % 7 == 0:
            a[:] = 0
        if trial % 11 == 0:
            a = (a & np.uint32(0x807FFFFF)) | np.uint32(20 << 23)
        a4 = np.broadcast_to(a.reshape(1, m, 1, 1), (groups, m, 1, 1))
        b4 = b.reshape(groups, m, 1, lanes)
        want = fp32._ordered(fp32.daz(a4), fp32.daz(b4), np.broadcast_shapes(a4.shape, b4.shape))
        got = fp32.dot_shared(a, b)
        assert got.shape == want.shape == (groups, 1, lanes)
        assert np.array_equal(got, want), (groups, m, lanes, trial)
        assert np.array_equal(got, fp32.dot(np.ascontiguousarray(a4), b4))


def test_largest_matches_the_golden_max_folds():
    # The lane tree and the group folds of fp32_max are the largest key of each row or run.
    rng = np.random.default_rng(12)
    special = np.array([0, 0x80000000, 1, 0x80000001, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001], np.uint32)
    for kind in range(4):
        for trial in range(100):
            x = _operands(rng, (int(rng.integers(1, 40)), int(rng.choice([2, 4, 8]))), kind)
            if trial % 3 == 0:
                x[rng.random(x.shape) < 0.3] = rng.choice(special)
            tree = x
            while tree.shape[1] > 1:
                tree = g.fp32_max(tree[:, 0::2], tree[:, 1::2])
            assert np.array_equal(pcu.reduce_lanes("max", x), tree[:, 0])
            flat = x.reshape(-1)
            starts = np.unique(np.concatenate([[0], rng.integers(0, flat.size, int(rng.integers(0, 6)))]))
            ends = np.append(starts[1:], flat.size)
            want = []
            for s, e in zip(starts, ends):
                acc = flat[s:s + 1]
                for v in flat[s + 1:e]:
                    acc = g.fp32_max(acc, np.array([v]))
                want.append(acc[0])
            got = np.where(ends - starts == 1, flat[starts], fp32.largest(flat, starts))
            assert np.array_equal(got, np.array(want, np.uint32)), (kind, trial)


def test_maxmin_matches_the_golden_model():
    rng = np.random.default_rng(13)
    a, b = patterns(rng, 50_000), patterns(rng, 50_000)
    for want_max, golden in ((True, g.fp32_max), (False, g.fp32_min)):
        assert np.array_equal(fp32.maxmin(a, b, want_max), golden(a, b))
        assert np.array_equal(fp32.maxmin(a[:300, None], b[None, :300], want_max), golden(a[:300, None], b[None, :300]))
        assert np.array_equal(fp32.maxmin(a, np.uint32(0), want_max), golden(a, np.uint32(0)))


def test_scalar_mul_and_add_match_the_golden_model():
    # Products near 2**-126 and sums near the subnormal range included.
    rng = np.random.default_rng(14)
    a, b = patterns(rng, 20_000), patterns(rng, 20_000)
    tiny = lambda n: ((rng.integers(0, 1 << 23, n) | (rng.integers(55, 75, n) << 23)
                       | (rng.integers(0, 2, n) << 31)).astype(np.uint32))
    low = lambda n: ((rng.integers(0, 1 << 23, n) | (rng.integers(0, 4, n) << 23)
                      | (rng.integers(0, 2, n) << 31)).astype(np.uint32))
    a, b = np.concatenate([a, tiny(5000), low(5000)]), np.concatenate([b, tiny(5000), low(5000)])
    want_mul, want_add = g.fp32_mul(a, b), g.fp32_add(a, b)
    got_mul = np.array([fp32.mul1(int(x), int(y)) for x, y in zip(a, b)], np.uint32)
    got_add = np.array([fp32.add1(int(x), int(y)) for x, y in zip(a, b)], np.uint32)
    assert np.array_equal(got_mul, want_mul) and np.array_equal(got_add, want_add)


def test_scalar_post_of_one_value_matches_the_arrays():
    from sw.tile.pcu import PcuConfig

    rng = np.random.default_rng(15)
    x = patterns(rng, 3000)
    for scale, bias in ((0.0078125, 1e-5), (2.0, -0.0), (1e-40, 3.0), (-1.5, 0.0)):
        config = PcuConfig(so_scale=scale, so_bias=bias)
        want = g.fp32_add(g.fp32_mul(x, pcu._bits(scale)), pcu._bits(bias))
        got = np.array([pcu.scalar_post(config, x[i:i + 1])[0] for i in range(x.size)], np.uint32)
        assert np.array_equal(got, want), (scale, bias)


def test_stage_operands_are_checked_unless_results():
    # A "pass" of an input and a subnormal constant still go through denormals-are-zero; a stage's result does
    # not need to.
    from sw.tile.pcu import PcuConfig, Stage

    rng = np.random.default_rng(16)
    x = patterns(rng, 4 * 1000)[:4 * 1000].reshape(-1, SMALL.lanes)
    last = np.zeros(len(x), bool)
    last[-1] = True
    cases = [
        ((Stage("pass", "r0", "zero", "zero", "r1"), Stage("mul", "r1", "r1", "zero", "r0")), "r0",
         lambda v: g.fp32_mul(v, v)),
        ((Stage("mul", "r0", "const", "zero", "r1", 0x00000123), Stage("mul", "r1", "r0", "zero", "r2")), "r2",
         lambda v: g.fp32_mul(g.fp32_mul(v, np.uint32(0x123)), v)),
        ((Stage("mul", "r0", "r0", "zero", "r1"), Stage("max", "r1", "r0", "zero", "r1")), "r1",
         lambda v: g.fp32_max(g.fp32_mul(v, v), v)),
    ]
    for stages, out, want in cases:
        config = PcuConfig(inputs=(0,), stages=stages, out_src=out)
        got = pcu.PcuModel(SMALL, config).run({0: (x, last)}).vo
        assert np.array_equal(got, want(x)), stages


@pytest.mark.parametrize("source", [slice(3, 3 + 4 * SMALL.lanes), ("take", np.array([[5, 0, 2, 2]])),
                                    ("tile", np.array([1, 7]), 2), np.array([[0, 3, 1, 0]])],
                         ids=["slice", "take", "tile", "zeros"])
def test_pmu_source_index_spells_out_the_gather(source):
    from sw.model.pmu import gather_by, source_index

    vi0 = np.arange(100, 100 + 8 * SMALL.lanes, dtype=np.uint32).reshape(-1, SMALL.lanes)
    out = gather_by(source, vi0, SMALL.lanes).reshape(-1)
    index = source_index(source, out.size)
    assert np.array_equal(out, np.where(index >= 0, vi0.reshape(-1)[np.maximum(index, 0)], 0))


@pytest.mark.parametrize("target_name", ["chip", "4x8"])
def test_shared_activation_gemv_matches_the_general_one(tmp_path, monkeypatch, target_name):
    # GEMVs that take their broadcast activation once, from a PMU gather of its first group only, give the
    # logits and cycles of the general GEMV on the whole broadcast.
    import asyncio

    from sw.compiler.compile import compile_model
    from sw.model import array, chip
    from sw.runtime.decode import generate
    from sw.runtime.device import ModelDevice
    from sw.target import CHIP, LARGE
    from tests.llama_checkpoints import SHAPES, make_checkpoint

    target = {"chip": CHIP, "4x8": LARGE}[target_name]
    compiled = compile_model(make_checkpoint(tmp_path, **SHAPES["tiny-tied"]), target, mode="fused", context=32)

    def run():
        # Launch plans (and the replay steps in them) made afresh.
        monkeypatch.setattr(chip, "_PLANS", {})
        monkeypatch.setattr(chip, "_ARRAYS", {})
        return asyncio.run(generate(ModelDevice(target), compiled, [1, 5, 9], max_new_tokens=3, stop_at_eos=False,
                                    keep_logits=True))
    shared, truncated = [], []
    original, truncate = array.ArrayModel._shared_activation, array.ArrayModel._truncate
    monkeypatch.setattr(array.ArrayModel, "_shared_activation",
                        lambda self, *a: shared.append(original(self, *a)) or shared[-1])

    def counting(self, steps, *a):
        before = list(steps)
        truncate(self, steps, *a)
        truncated.append(sum(x is not y for x, y in zip(before, steps)))
    monkeypatch.setattr(array.ArrayModel, "_truncate", counting)
    fast = run()
    assert any(shared) and sum(truncated), "some GEMV takes its activation once, from a gather of one group"
    monkeypatch.setattr(array.ArrayModel, "_shared_activation", lambda self, *a: False)
    monkeypatch.setattr(array.ArrayModel, "_truncate", lambda self, *a: None)
    general = run()
    assert np.array_equal(fast["logits"], general["logits"]) and fast["tokens"] == general["tokens"]
    assert fast["step_cycles"] == general["step_cycles"]


# The compiled credit service (sw/model/credit.c, docs/performance.md "Compiled credit service") against the
# Python loop it replaces, and the fallback to that loop.

def _tiers():
    """The small chip's tiers and variants with a shallow queue, a short latency and a fractional rate (the
    token bucket's partial-word branches)."""
    import dataclasses
    from fractions import Fraction

    from hw.mem import params as mem

    hbm, ddr = mem.SMALL.tiers
    return [hbm, ddr, dataclasses.replace(hbm, queue_depth=2, latency=5, channel_bytes_per_cycle=Fraction(5, 3)),
            dataclasses.replace(ddr, queue_depth=2, latency=1, channel_bytes_per_cycle=Fraction(7, 2))]


def _streams(rng, count):
    """``count`` random streams as ``chip._credit_service`` takes them: fp32, bf16 (two vectors a word), gathered
    (several words a vector), no vectors at all, empty; sinks free, late from the start, or ready at random
    increasing cycles after a few free vectors; some words already buffered (none, some, all, more)."""
    from sw.model import chip

    out = []
    for _ in range(count):
        words = int(rng.choice([0, 1, 3, int(rng.integers(1, 400))]))
        vectors = int(rng.choice([words, 2 * words, -(-words // int(rng.integers(2, 9))), 0]))
        kind = rng.integers(0, 3)
        if kind == 0:
            ready = np.full(vectors, chip._NEVER, np.int64)
        elif kind == 1:
            ready = np.full(vectors, int(rng.integers(0, 3000)), np.int64)
        else:
            ready = np.cumsum(rng.integers(0, 12, vectors)) + int(rng.integers(0, 500))
            ready[:int(rng.integers(0, vectors + 1))] = chip._NEVER
        held = int(rng.choice([0, 0, min(words, int(rng.integers(0, 70))), words, words + 2]))
        out.append((words, vectors, ready.astype(np.int64), held))
    return out


def _compiled():
    from sw.model import credit

    if not credit.available():
        pytest.skip("no C compiler: the compiled credit service is not built")
    return credit


@pytest.mark.parametrize("seed", range(8))
def test_compiled_credit_service_matches_python(seed, monkeypatch):
    # Several streams per tier, backlogged (a deep late sink), held words, few and many credits, a tier whose
    # bucket pays out in parts: every branch of the loop, the same responses to the cycle. (Some cases, such as
    # two streams due at the queue's free slot, show up once in a few hundred services: 240 a seed here.)
    credit = _compiled()
    from sw.model import chip

    # Every service here is one the compiled loop takes: a refusal would compare Python with Python.
    service = credit.service
    ran = []
    monkeypatch.setattr(credit, "service", lambda *a: ran.append(service(*a)) or ran[-1])
    rng = np.random.default_rng(seed)
    for tier in _tiers() * 5:
        for outstanding in (1, 4, 64, 500):
            for count in (1, 2, 5):
                streams = _streams(rng, count)
                want = chip._credit_service_py(tier, 16, streams, outstanding)
                got = chip._credit_service(tier, 16, streams, outstanding)
                assert got == want, (tier, outstanding, [(w, v, h) for w, v, _, h in streams])
                assert all(type(x) is int for r in got for x in r)
    assert ran and all(r is not None for r in ran)
    assert chip._credit_service(_tiers()[0], 16, [], 64) == chip._credit_service_py(_tiers()[0], 16, [], 64) == []


def test_compiled_credit_service_refuses_what_it_does_not_take():
    # Inputs outside the C loop's types go to the Python loop, which decides (errors included).
    credit = _compiled()
    from sw.model import chip

    tier = _tiers()[0]
    args = (64, tier.queue_depth, tier.latency, 1, 1, chip.AGCU_START_CYCLES, chip.AGCU_READ_CYCLES, 0)
    good = np.zeros(4, np.int64)
    assert credit.service([(4, 4, good, 0)], *args) is not None
    for bad in ([(4, 4, good.astype(np.float64), 0)], [(4, 4, good[:3], 0)], [(4, 4, list(good), 0)],
                [(4.0, 4, good, 0)], [(-1, 4, good, 0)], [(4, 4, good.astype(np.uint64), 0)],
                [(4, 4, good + (1 << 61), 0)], [(1 << 41, 4, good, 0)]):
        assert credit.service(bad, *args) is None
    assert credit.service([(4, 4, good, 0)], 64, 0, *args[2:]) is None
    assert credit.service([(4, 4, good, 0)], 1 << 41, *args[1:]) is None


def test_credit_service_falls_back_without_a_compiler(monkeypatch, tmp_path, capsys):
    from sw.model import chip, credit

    monkeypatch.setenv("OPENRDU_BUILD_DIR", str(tmp_path))
    monkeypatch.setattr(credit, "_LOADED", None)
    monkeypatch.setattr(credit, "compiler", lambda: None)
    streams = _streams(np.random.default_rng(7), 3)
    want = chip._credit_service_py(_tiers()[2], 16, streams, 4)
    assert chip._credit_service(_tiers()[2], 16, streams, 4) == want
    assert chip._credit_service(_tiers()[2], 16, streams, 4) == want
    assert not credit.available() and credit.service(streams, 4, 8, 24, 1, 1, 2, 3, 0) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no C compiler found" in err and "Python loop" in err
    assert not list(tmp_path.iterdir())


def test_credit_service_falls_back_when_the_build_fails(monkeypatch, tmp_path, capsys):
    from sw.model import credit

    monkeypatch.setenv("OPENRDU_BUILD_DIR", str(tmp_path))
    monkeypatch.setattr(credit, "_LOADED", None)
    monkeypatch.setenv("CC", "false")
    assert not credit.available() and not credit.available()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "false failed" in err
    # No temporary file left behind, no library.
    assert not list((tmp_path / "model").iterdir())


def test_credit_service_builds_into_the_cache_once(monkeypatch, tmp_path):
    credit = _compiled()
    monkeypatch.setenv("OPENRDU_BUILD_DIR", str(tmp_path))
    monkeypatch.setattr(credit, "_LOADED", None)
    assert credit.available()
    built = list((tmp_path / "model").iterdir())
    assert len(built) == 1 and built[0].name.startswith("credit-") and built[0].suffix == ".so"
    # Same source and compiler: the cached file is loaded, not rebuilt.
    monkeypatch.setattr(credit, "_LOADED", None)
    stamp = built[0].stat().st_mtime_ns
    assert credit.available() and built[0].stat().st_mtime_ns == stamp
    # Readable by every user of a shared build folder (mkstemp made it private).
    assert built[0].stat().st_mode & 0o044 == 0o044 & ~_umask()
    # A cached library that does not load is built once more (in another folder: this process maps the first).
    other = tmp_path / "other"
    (other / "model").mkdir(parents=True)
    (other / "model" / built[0].name).write_bytes(b"not a library")
    monkeypatch.setenv("OPENRDU_BUILD_DIR", str(other))
    monkeypatch.setattr(credit, "_LOADED", None)
    assert credit.available() and (other / "model" / built[0].name).read_bytes()[:4] == b"\x7fELF"


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_credit_cache_outside_a_checkout_is_the_users(monkeypatch, tmp_path):
    from sw.model import credit

    monkeypatch.delenv("OPENRDU_BUILD_DIR", raising=False)
    assert credit.build_dir() == credit._REPO / "build" / "model"
    monkeypatch.setattr(credit, "_REPO", tmp_path / "site-packages")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert credit.build_dir() == (tmp_path / "cache").resolve() / "openrdu" / "model"


def test_unparsable_cc_falls_back(monkeypatch, tmp_path, capsys):
    from sw.model import credit

    monkeypatch.setenv("OPENRDU_BUILD_DIR", str(tmp_path))
    monkeypatch.setattr(credit, "_LOADED", None)
    monkeypatch.setenv("CC", 'gcc "')
    assert not credit.available()
    assert capsys.readouterr().err.count("\n") == 1


def test_credit_service_forced_to_python(monkeypatch):
    from sw.model import credit

    monkeypatch.setenv("OPENRDU_NO_CEXT", "1")
    assert not credit.available()
    assert credit.service([(4, 4, np.zeros(4, np.int64), 0)], 64, 8, 24, 1, 1, 2, 3, 0) is None


def test_decode_identical_with_the_compiled_credit_service(monkeypatch, tmp_path):
    # A short decode on the chip target, every credit service computed afresh on each path: the same tokens,
    # logits and report (but the wall time).
    pytest.importorskip("torch")
    credit = _compiled()
    from tests.fresh_decode import fresh_decode, tiny_compiled

    compiled = tiny_compiled(tmp_path)
    calls = []
    responses = credit.responses
    monkeypatch.setattr(credit, "responses", lambda *a: calls.append(responses(*a)) or calls[-1])

    def decode():
        return fresh_decode(compiled)

    fast = decode()
    assert calls, "the decode ran no credit service"
    assert all(c is not None for c in calls), "the compiled loop refused a service of the decode"
    monkeypatch.setenv("OPENRDU_NO_CEXT", "1")
    slow = decode()
    assert fast.keys() == slow.keys()
    for key in fast:
        if isinstance(fast[key], np.ndarray):
            assert np.array_equal(fast[key], slow[key]), key
        else:
            assert fast[key] == slow[key], key


def test_round_robin_service_from_the_compiled_responses():
    # _round_robin_service takes the compiled loop's responses as one array: the tier's own service of requests
    # offered round-robin, a word a cycle each stream, to the cycle (several stream counts, totals not a multiple).
    import dataclasses
    from fractions import Fraction

    from sw.model import chip
    from sw.model.memory import TierModel
    from sw.target import CHIP, LARGE

    _compiled()
    tiers = [*CHIP.memory.tiers, *LARGE.memory.tiers,
             dataclasses.replace(CHIP.memory.tiers[1], channel_bytes_per_cycle=Fraction(3, 2), latency=7, queue_depth=3)]
    for tier in tiers:
        for streams in (1, 2, 3, 5):
            for total in (1, 4, 37, 600):
                want = TierModel(tier, word_bytes=16).service(
                    (chip.AGCU_START_CYCLES + np.arange(total) // streams).tolist())
                got = chip._round_robin_service(tier, 16, streams, total)
                assert got == want and all(type(x) is int for x in got)


def _loaded_device(tmp_path):
    """A ModelDevice with the tiny model's memory image loaded, a launch of it and its program's region."""
    import asyncio

    from sw.runtime.decode import Session
    from sw.runtime.device import ModelDevice
    from sw.target import CHIP
    from tests.test_model_shared_plans import _compiled

    compiled = _compiled(tmp_path, CHIP)
    device = ModelDevice(CHIP)
    asyncio.run(Session(device, compiled).load())
    launch = compiled.buckets[8][0]
    return device, launch, compiled.memory_map[launch.program_region]


def test_program_load_checks_the_bitstream_in_place(tmp_path):
    # ModelDevice.load_program compares a flat tier's bytes where they lie: the program's bitstream loads, another
    # one (a byte changed) is refused, and a place past the tier's end is reported by the tier as before.
    import asyncio

    from sw.errors import ChipError
    from sw.model.memory import MemoryRangeError

    device, launch, region = _loaded_device(tmp_path)
    assert asyncio.run(device.load_program(launch.program, region.tier, region.offset)) == len(launch.program.words)
    tier = device.chip.memory[region.tier]
    tier.bytes[region.offset + 5] ^= 1
    with pytest.raises(ChipError, match="is not the program's"):
        asyncio.run(device.load_program(launch.program, region.tier, region.offset))
    with pytest.raises(MemoryRangeError):
        asyncio.run(device.load_program(launch.program, region.tier, tier.capacity - 16))


def test_program_load_kept_place_follows_the_tier(tmp_path):
    # load_program_now keeps the bitstream's place in the tier per program: a changed byte there is refused on a
    # later load, a tier replaced (the same bytes) is found again, and its changed byte is refused too; the
    # loader's reads are counted on every load.
    from hw.mem.params import TIER_NAMES
    from sw.errors import ChipError
    from sw.model.memory import FlatMemory

    device, launch, region = _loaded_device(tmp_path)
    counter = device.chip.stats[TIER_NAMES[region.tier]]
    before = counter["reads"]
    assert device.load_program_now(launch.program, region.tier, region.offset) == len(launch.program.words)
    words = counter["reads"] - before
    assert words > 0
    assert device.load_program_now(launch.program, region.tier, region.offset) == len(launch.program.words)
    assert counter["reads"] - before == 2 * words
    tier = device.chip.memory[region.tier]
    tier.bytes[region.offset + 3] ^= 4
    with pytest.raises(ChipError, match="is not the program's"):
        device.load_program_now(launch.program, region.tier, region.offset)
    tier.bytes[region.offset + 3] ^= 4
    fresh = FlatMemory(tier.name, tier.capacity)
    fresh.bytes[:] = tier.bytes
    device.chip.memory[region.tier] = fresh
    assert device.load_program_now(launch.program, region.tier, region.offset) == len(launch.program.words)
    fresh.bytes[region.offset] ^= 1
    with pytest.raises(ChipError, match="is not the program's"):
        device.load_program_now(launch.program, region.tier, region.offset)


def test_runtime_awaits_an_overridden_program_load(tmp_path):
    # A ModelDevice subclass that overrides load_program has the runtime await it (program_loader is None);
    # ModelDevice itself hands the runtime its plain load, and both decodes give the same logits and cycles.
    import asyncio

    from sw.runtime.decode import generate
    from sw.runtime.device import ModelDevice
    from sw.target import CHIP
    from tests.test_model_shared_plans import _compiled

    class Counted(ModelDevice):
        loads = 0

        async def load_program(self, program, tier, offset):
            self.loads += 1
            return await super().load_program(program, tier, offset)

    compiled = _compiled(tmp_path, CHIP)
    plain, counted = ModelDevice(CHIP), Counted(CHIP)
    assert plain.program_loader() is not None and counted.program_loader() is None
    want = asyncio.run(generate(plain, compiled, [0, 4], max_new_tokens=3, stop_at_eos=False))
    got = asyncio.run(generate(counted, compiled, [0, 4], max_new_tokens=3, stop_at_eos=False))
    assert counted.loads > 0
    assert got["logits_sha"] == want["logits_sha"] and got["step_cycles"] == want["step_cycles"]
