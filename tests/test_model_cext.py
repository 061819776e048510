"""The compiled fp32 kernels (sw/model/fastfp.c, docs/performance.md "Fast model, sixth pass") against the numpy
forms they replace and the golden model: the same bits on random and special inputs, and the fallback."""

import numpy as np
import pytest

from sw.golden import arith as g
from sw.model import fp32
from tests.test_model_speedups import _operands

# Edge patterns: zeros, subnormals, the least normal and its neighbours, ones, the largest finite, infinities,
# NaNs (canonical and not), and values whose products or sums land near 2**-126 or overflow.
SPECIAL = np.array([0, 0x80000000, 1, 0x80000001, 0x007FFFFF, 0x807FFFFF, 0x00800000, 0x80800000, 0x00800001,
                    0x00FFFFFF, 0x3F800000, 0xBF800000, 0x3F800001, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000,
                    0x7FC00000, 0x7FC00001, 0xFFFFFFFF, 0x7F800001, 0x1F800000, 0x1F7FFFFF, 0x20000000, 0x1FFFFFFF,
                    0x3F000000, 0x60000000, 0x5F800000, 0x0C000000, 0x33800000, 0x34000000], np.uint32)


@pytest.fixture
def kernels():
    k = fp32.kernels()
    if k is None:
        pytest.skip("no C compiler or Python headers: the compiled fp32 kernels are not built")
    return k


def _python(monkeypatch, fn, *args, **kw):
    """``fn(*args)`` on the numpy forms (the kernels turned off for the call)."""
    with monkeypatch.context() as m:
        m.setattr(fp32, "_C", False)
        return fn(*args, **kw)


def _values(rng, shape, kind):
    """Random patterns (kinds 0 to 3 of test_model_speedups._operands), kind 4: drawn from SPECIAL, kind 5: tiny
    exponents (products and sums near 2**-126)."""
    if shape == ():
        return np.uint32(_values(rng, (1,), kind)[0])
    if kind == 4:
        return rng.choice(SPECIAL, shape)
    if kind == 5:
        x = _operands(rng, shape, 0)
        return (x & np.uint32(0x807FFFFF)) | (rng.integers(1, 80, shape).astype(np.uint32) << np.uint32(23))
    return _operands(rng, shape, kind)


@pytest.mark.parametrize("kind", range(6))
def test_gemv_matches_numpy_and_golden(kind, kernels, monkeypatch):
    rng = np.random.default_rng(100 + kind)
    for trial in range(40):
        groups, m, lanes = int(rng.integers(1, 6)), int(rng.integers(0, 30)), int(rng.choice([1, 2, 4, 8, 16]))
        rows = int(rng.choice([1, 1, 2, 4]))
        a, b = _values(rng, (groups, m, rows, 1), kind), _values(rng, (groups, m, 1, lanes), kind)
        got = fp32.dot(a, b)
        assert np.array_equal(got, _python(monkeypatch, fp32.dot, a, b)), (kind, trial)
        if m:
            # The golden model step by step: acc = p_j + acc from +0.
            p = g.fp32_mul(np.broadcast_to(a, (groups, m, rows, lanes)), np.broadcast_to(b, (groups, m, rows, lanes)))
            acc = np.zeros((groups, rows, lanes), np.uint32)
            for j in range(m):
                acc = g.fp32_add(p[:, j], acc)
            assert np.array_equal(got, acc), (kind, trial)
        shared = a[0, :, 0, 0]
        want = _python(monkeypatch, fp32.dot_shared, shared, b.reshape(groups, m, lanes))
        assert np.array_equal(fp32.dot_shared(shared, b.reshape(groups, m, lanes)), want), (kind, trial)


@pytest.mark.parametrize("kind", range(6))
def test_sums_match_numpy(kind, kernels, monkeypatch):
    rng = np.random.default_rng(200 + kind)
    for trial in range(40):
        n, lanes = int(rng.integers(0, 20)), int(rng.choice([1, 2, 4, 8, 16]))
        x = _values(rng, (n, lanes), kind)
        assert np.array_equal(fp32.lane_sums(x), _python(monkeypatch, fp32.lane_sums, x)), (kind, trial)
        groups, m = int(rng.integers(1, 6)), int(rng.integers(1, 40))
        y = _values(rng, (groups, m), kind)
        for start in (0, 0x80000000):
            got = fp32.ordered_sums(y, start)
            assert np.array_equal(got, _python(monkeypatch, fp32.ordered_sums, y, start)), (kind, trial)
            assert np.array_equal(got, fp32.accumulate(y, 1, start=start)[:, -1])


def test_sums_of_special_pairs(kernels, monkeypatch):
    # Every pair of special patterns through the lane tree and a fold: -0 + -0, inf - inf, NaN payloads, flushes.
    a, b = np.meshgrid(SPECIAL, SPECIAL)
    x = np.stack([a.reshape(-1), b.reshape(-1)], axis=1)
    assert np.array_equal(fp32.lane_sums(x), g.fp32_add(x[:, 0], x[:, 1]))
    assert np.array_equal(fp32.lane_sums(x), _python(monkeypatch, fp32.lane_sums, x))
    for start in (0, 0x80000000):
        assert np.array_equal(fp32.ordered_sums(x, start), _python(monkeypatch, fp32.ordered_sums, x, start))


@pytest.mark.parametrize("kind", range(6))
def test_elementwise_ops_match_numpy_and_golden(kind, kernels, monkeypatch):
    rng = np.random.default_rng(300 + kind)
    golden = {"add": g.fp32_add, "sub": lambda a, b: g.fp32_add(a, b, True), "mul": g.fp32_mul,
              "max": g.fp32_max, "min": g.fp32_min}
    ours = {"add": fp32.add, "sub": lambda a, b: fp32.add(a, b, sub=True), "mul": fp32.mul,
            "max": fp32.maxmin, "min": lambda a, b: fp32.maxmin(a, b, want_max=False)}
    n, lanes = 37, 8
    # Operand shapes as a PCU's stages give them: registers, per-firing scalars, constants, a 1-D vector.
    shapes = [((n, lanes), (n, lanes)), ((n, lanes), (n, 1)), ((n, 1), (n, lanes)), ((n, lanes), ()),
              ((), (n, lanes)), ((n,), ()), ((n,), (n,)), ((lanes,), (n, lanes)), ((1, lanes), (n, 1))]
    for sa, sb in shapes:
        a, b = _values(rng, sa, kind), _values(rng, sb, kind)
        for name, fn in ours.items():
            got = fn(a, b)
            want = _python(monkeypatch, fn, a, b)
            assert got.dtype == np.uint32 and np.array_equal(got, want), (name, sa, sb)
            ga, gb = np.broadcast_arrays(np.asarray(a, np.uint32), np.asarray(b, np.uint32))
            assert np.array_equal(got, golden[name](ga, gb)), (name, sa, sb)


def test_elementwise_special_pairs(kernels, monkeypatch):
    # Every pair of special patterns: products at 2**-126 and below (the golden rounding), overflow, -0 and NaN.
    a, b = (x.reshape(-1).copy() for x in np.meshgrid(SPECIAL, SPECIAL))
    tiny = np.array([0x1F800000, 0x1FFFFFFF, 0x20000000, 0x1F000001, 0x1FC00000], np.uint32)
    a2, b2 = (x.reshape(-1).copy() for x in np.meshgrid(tiny, tiny | np.uint32(0x00400001)))
    for x, y in ((a, b), (a2, b2)):
        assert np.array_equal(fp32.mul(x, y), g.fp32_mul(x, y))
        assert np.array_equal(fp32.mul(x, y), _python(monkeypatch, fp32.mul, x, y))
        assert np.array_equal(fp32.add(x, y), g.fp32_add(x, y))
        assert np.array_equal(fp32.add(x, y, sub=True), g.fp32_add(x, y, True))
        assert np.array_equal(fp32.maxmin(x, y), g.fp32_max(x, y))
        assert np.array_equal(fp32.maxmin(x, y, want_max=False), g.fp32_min(x, y))


def test_near_least_normal_products(kernels):
    # Products whose IEEE form is subnormal or exactly 2**-126, where the policy rounds as if unbounded: dense
    # significands around the boundary.
    rng = np.random.default_rng(5)
    a = (rng.integers(0, 1 << 23, 20000).astype(np.uint32) | np.uint32(0x1F000000)) ^ \
        (rng.integers(0, 2, 20000).astype(np.uint32) << np.uint32(31))
    b = rng.integers(0, 1 << 23, 20000).astype(np.uint32) | np.uint32(0x1F800000)
    assert np.array_equal(fp32.mul(a, b), g.fp32_mul(a, b))
    gemv = fp32.dot(a.reshape(100, 200, 1, 1), b.reshape(100, 200, 1, 1))
    assert np.array_equal(gemv, fp32._ordered(a.reshape(100, 200, 1, 1), b.reshape(100, 200, 1, 1), (100, 200, 1, 1)))


def test_fallback_without_kernels(monkeypatch, tmp_path, capsys):
    from sw.model import cext

    monkeypatch.delenv("OPENRDU_NO_CEXT", raising=False)
    monkeypatch.setattr(fp32, "_C", None)
    monkeypatch.setenv("OPENRDU_BUILD_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "false")
    assert fp32.kernels() is None and fp32.kernels() is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "numpy" in err
    a = _operands(np.random.default_rng(1), (8, 4), 3)
    assert np.array_equal(fp32.add(a, a), g.fp32_add(a, a))
    monkeypatch.setattr(fp32, "_C", None)
    monkeypatch.setenv("OPENRDU_NO_CEXT", "1")
    monkeypatch.delenv("CC")
    assert cext.disabled() and fp32.kernels() is None
    assert not capsys.readouterr().err


def test_kernels_reject_bad_buffers(kernels):
    out = np.empty(4, np.uint32)
    with pytest.raises(ValueError):
        kernels.lane_sums(np.zeros(4, np.uint32), out, 4, 4)        # too short
    with pytest.raises(ValueError):
        kernels.lane_sums(np.zeros(12, np.uint32), out, 4, 3)       # not a power of two
    with pytest.raises(ValueError):
        kernels.gemv(np.zeros(4, np.float64), np.zeros(8, np.uint32), out, 1, 2, 1, 4, 0, 1)
    with pytest.raises(ValueError):
        kernels.binary(7, out, out, out, 1, 4, 0, 1, 0, 1)
    with pytest.raises((ValueError, BufferError)):
        kernels.ordered_sums(np.zeros((4, 4), np.uint32)[:, ::2], out, 4, 2, 0)


def _pcu_runs(monkeypatch, kernel, vi):
    """The compiled and the numpy run of ``kernel``'s configuration on streams ``vi``, and whether C ran."""
    from sw.model import pcu

    model = pcu.PcuModel(kernel.params, kernel.config)
    got = model.run(vi, kernel.si)
    want = _python(monkeypatch, model.run, vi, kernel.si)
    return got, want, model._kernels() is not None


@pytest.mark.parametrize("chunk", range(4))
def test_compiled_pcu_matches_numpy_on_random_kernels(chunk, kernels, monkeypatch):
    # Random PCU kernels (sw/tile/random_kernels.py: every stage op, tail, post function, so mode, systolic and
    # not, special values), and the same kernels on streams of special patterns only: the compiled run gives the
    # numpy run's bits.
    from sw.tile import random_kernels as rk

    compiled = 0
    rng = np.random.default_rng(400 + chunk)
    for seed in range(chunk * 100, (chunk + 1) * 100):
        kernel = rk.pcu_kernel(seed)
        special = {k: (rng.choice(SPECIAL, np.shape(data)).astype(np.uint32), last)
                   for k, (data, last) in kernel.vi.items()}
        for vi in (kernel.vi, special):
            got, want, ran = _pcu_runs(monkeypatch, kernel, vi)
            compiled += ran
            for name in ("vo", "vo_last", "so", "so_last"):
                assert np.array_equal(getattr(got, name), getattr(want, name)), (seed, name)
                assert getattr(got, name).dtype == getattr(want, name).dtype, (seed, name)
            assert (got.firings, got.cycles) == (want.firings, want.cycles)
    # Only bf16 tails and posts keep the numpy run.
    assert compiled >= 120


def test_compiled_pcu_stands_down_for_replaced_arithmetic(kernels, monkeypatch):
    # tests/test_random_kernels.py replaces fp32.daz, fp32.add or reduce_lanes to prove a wrong model is caught: the
    # unit then runs the numpy form, which calls them.
    from sw.model import pcu
    from sw.tile import random_kernels as rk

    kernel = next(k for k in map(rk.pcu_kernel, range(50)) if pcu.PcuModel(k.params, k.config)._compiled is not None)
    model = pcu.PcuModel(kernel.params, kernel.config)
    assert model._kernels() is kernels
    for name, module in (("daz", fp32), ("add", fp32), ("reduce_lanes", pcu)):
        with monkeypatch.context() as m:
            m.setattr(module, name, lambda *a, **k: None)
            assert model._kernels() is None


def test_decode_identical_with_the_compiled_kernels(monkeypatch, tmp_path):
    # A short decode on the chip target with the compiled kernels and with numpy: the same tokens, logits and
    # report (but the wall time).
    pytest.importorskip("torch")
    if fp32.kernels() is None:
        pytest.skip("no C compiler or Python headers: the compiled fp32 kernels are not built")
    from tests.fresh_decode import fresh_decode, tiny_compiled

    compiled = tiny_compiled(tmp_path)

    def decode():
        return fresh_decode(compiled)

    with_c = decode()
    assert with_c == _python(monkeypatch, decode)


@pytest.mark.parametrize("reduce", ["sum", "max"])
def test_compiled_pcu_folds_signed_zeros(reduce, kernels, monkeypatch):
    # Groups of negative zeros, tiny values and NaN payloads through the lane reduction, the group fold (from -0 for
    # a sum) and so0's multiply-add: rows chosen so that whole groups are -0.
    from hw.tile.params import SMALL
    from sw.tile.pcu import PcuConfig

    rng = np.random.default_rng(9)
    pool = np.array([0x80000000, 0x80000000, 0x80000000, 0, 1, 0x80000001, 0x7FC00001, 0xFF800000], np.uint32)
    for trial in range(40):
        n = int(rng.integers(1, 30))
        last = rng.random(n) < 0.4
        last[-1] = True
        data = rng.choice(pool[: 3 + trial % 6], (n, SMALL.lanes)).astype(np.uint32)
        for so in ("every", "group"):
            for bias in (0.0, -0.0, 1.5):
                cfg = PcuConfig(inputs=(0,), reduce=reduce, so=so, so_bias=bias, vo=True)
                kernel = type("K", (), {"params": SMALL, "config": cfg, "si": {}})
                got, want, ran = _pcu_runs(monkeypatch, kernel, {0: (data, last)})
                assert ran
                assert np.array_equal(got.so, want.so), (trial, so, bias)
                assert np.array_equal(got.vo, want.vo), (trial, so, bias)


@pytest.mark.parametrize("groups, seed", [(6, 11), (19, 12)])
def test_gemv_flushes_subnormal_partial_sums(kernels, monkeypatch, groups, seed):
    # Products just above 2**-126 (normal: the vector path takes them) of both signs: their partial sums fall below
    # 2**-126 and must be flushed to their sign at every step, as the golden accumulation does. 19 groups: two
    # blocks of eight (the 8-lane AVX2 path where the processor has it) and three after them.
    rng = np.random.default_rng(seed)
    for lanes in (4, 8, 2):
        m = 16
        b = (rng.integers(1, 1 << 23, (groups, m, 1, lanes)).astype(np.uint32) | np.uint32(1 << 23)) | \
            (rng.integers(0, 2, (groups, m, 1, lanes)).astype(np.uint32) << np.uint32(31))
        for a in (np.full((groups, m, 1, 1), 0x3F800000, np.uint32), rng.choice(
                np.array([0x3F800000, 0xBF800000, 0x3F800001], np.uint32), (groups, m, 1, 1))):
            want = _python(monkeypatch, fp32._ordered, a, b, (groups, m, 1, lanes))
            assert np.array_equal(fp32.dot(a, b), want), lanes
            assert np.array_equal(fp32.dot_shared(a[0, :, 0, 0], b.reshape(groups, m, lanes)),
                                  _python(monkeypatch, fp32.dot_shared, a[0, :, 0, 0], b.reshape(groups, m, lanes)))
            # Some sums were flushed: the check means something.
            plain = np.add.reduce(np.moveaxis(b.view(np.float32) * a.view(np.float32), 1, 0), axis=0)
            assert not np.array_equal(plain.view(np.uint32).reshape(want.shape), want)


def test_compiled_pcu_refuses_streams_of_the_wrong_size(kernels, monkeypatch):
    # A stream whose data does not match its `last` flags is an error on both paths, not a silent truncation.
    from hw.tile.params import SMALL
    from sw.model import pcu
    from sw.tile.pcu import PcuConfig

    last = np.array([False, True, False, True])
    data = np.zeros((5, SMALL.lanes), np.uint32)
    model = pcu.PcuModel(SMALL, PcuConfig(inputs=(0,), reduce="sum", so="group"))
    with pytest.raises(ValueError):
        model.run({0: (data, last)})
    with pytest.raises(ValueError):
        _python(monkeypatch, model.run, {0: (data, last)})


def test_kernels_refuse_sizes_whose_products_overflow(kernels):
    # Each size is at most 2**40, but products and sums of sizes could wrap and let a small buffer pass the size
    # check (the reads and writes then out of bounds): such calls are refused.
    u32, one, empty = np.uint32, np.zeros(1, np.uint32), np.zeros(0, np.uint32)
    with pytest.raises(ValueError):
        kernels.binary(0, one, one, empty, 1 << 32, 1 << 32, 0, 0, 0, 0)          # rows x lanes wraps to 0
    with pytest.raises(ValueError):
        kernels.gemv(np.zeros(1 << 4, u32), empty, empty, 1 << 40, 1 << 24, 1, 1, 0, 0)
    with pytest.raises(ValueError):
        kernels.gemv(np.zeros(1 << 24, u32), empty, empty, 1 << 40, 1 << 24, 1 << 24, 1, 0, 0)
    with pytest.raises(ValueError):
        kernels.ordered_sums(one, empty, 1 << 32, 1 << 32, 0)
    with pytest.raises(ValueError):
        kernels.ordered_sums(np.zeros(1, u32), np.zeros(1 << 24, u32), 1 << 24, 1 << 40, 0)     # groups x m wraps
    with pytest.raises(ValueError):
        kernels.lane_sums(one, one, 1 << 40, 64)
    # A group whose start + size wraps past 2**63.
    for start, reduce in ((1 << 62, 0), (1 << 40, 1)):
        with pytest.raises(ValueError):
            kernels.pcu(np.zeros((0, 6), np.int64), 0, 2, 4, np.zeros((2, 4), u32), None, None, None, None, 0, -1,
                        np.empty((2, 4), u32), 2, reduce, np.array([start], np.int64),
                        np.array([(1 << 63) - start + 1], np.int64), 1, 0x3F800000, 0, -1, np.empty(1, u32))
    # A bad integer argument is reported as itself, not after later conversions.
    with pytest.raises(TypeError):
        kernels.pcu(np.zeros((0, 6), np.int64), 0, 2, 4, None, None, None, None, None, "0", -1,
                    np.empty((2, 4), u32), 0, 0, None, None, 0, 0, 0, -1, np.empty(0, u32))


def test_set_tables_refusal_keeps_the_tables(kernels):
    # A refused set_tables (a bad entry in the last table, seeds too wide for SEED_FRAC, SEED_FRAC 0 or too large)
    # changes nothing: the tail functions give the same bits after it.
    import facts.tail as tf

    x = np.arange(0, 1 << 32, 65521, dtype=np.uint64).astype(np.uint32)
    before = []
    for op in range(5):
        before.append(np.empty_like(x))
        kernels.tail(op, x, before[-1], x.size)
    good = [list(tf.EXP_TABLE), list(tf.RECIP_SEED), list(tf.RSQRT_SEED), tf.EXP_LOG2E, *tf.EXP_POLY, tf.EXP_X_HUGE,
            tf.EXP_HUGE_N, tf.SEED_FRAC]
    wide = 1 << (tf.SEED_FRAC + 1)
    bad = [
        [[1] * 128, [1] * 128, [1] * 127 + [-1], *good[3:]],             # the last entry negative
        [[1] * 128, [1] * 128, [1] * 127 + [wide], *good[3:]],           # a seed of SEED_FRAC + 2 bits
        [*good[:9], 0],                                                   # SEED_FRAC 0: a negative shift
        [*good[:9], 40],                                                  # seeds past 128-bit products
        [[1 << 40] * 128, *good[1:]],
        [*good[:3], 1 << 41, *good[4:]],
        [[1] * 128, [1] * 128, [1] * 128, *good[3:9], "12"],
    ]
    try:
        for args in bad:
            with pytest.raises((ValueError, TypeError)):
                kernels.set_tables(*args)
            for op in range(5):
                out = np.empty_like(x)
                kernels.tail(op, x, out, x.size)
                assert np.array_equal(out, before[op]), (op, args[9])
    finally:
        kernels.set_tables(*good)


def test_ordered_sums_flush_a_subnormal_start(kernels, monkeypatch):
    # start is the first addition's operand: denormals-are-zero applies (-0 + -0 from -2**-149: -0), in C, in the
    # numpy form and in the golden steps.
    x = np.array([[0x80000000, 0x80000000]], np.uint32)
    for start, want in ((0x80000001, 0x80000000), (0x00000001, 0), (0x807FFFFF, 0x80000000)):
        golden = np.uint32(start)
        for j in range(x.shape[1]):
            golden = g.fp32_add(x[:, j], golden)
        assert int(golden[0]) == want
        assert int(fp32.ordered_sums(x, start)[0]) == want
        assert int(_python(monkeypatch, fp32.ordered_sums, x, start)[0]) == want
        assert int(_python(monkeypatch, fp32.ordered_sums, x, start, clean=True)[0]) == want


def test_compiled_tails_match_golden(kernels):
    # The compiled tails (fastfp.c tail_one) against sw/golden/tail.py directly: stride sweeps over every pattern
    # (60k a function, each from its own offset: 300k in all, every exponent and sign; the golden form takes about
    # 8 us a pattern) and, for every exponent and sign, edge fractions.
    from sw.golden import tail as golden
    from sw.model import tail

    e, frac = np.arange(256, dtype=np.uint32), np.array([0, 1, 2, 3, 0x10000, 0x1FFFF, 0x20000, 0x3FFFFF, 0x400000,
                                                          0x7FFFFE, 0x7FFFFF], np.uint32)
    edge = ((e[:, None, None] << np.uint32(23)) | frac[None, :, None]
            | (np.array([0, 1], np.uint32)[None, None, :] << np.uint32(31))).reshape(-1)
    for k, name in enumerate(("exp", "recip", "rsqrt", "sigmoid", "silu")):
        sweep = np.arange(k * 14303, 1 << 32, 71503, dtype=np.uint64).astype(np.uint32)
        x = np.concatenate([sweep, edge, SPECIAL])
        got, want = getattr(tail, name)(x), getattr(golden, name)(x)
        bad = np.flatnonzero(got != want)
        assert not bad.size, (name, [hex(int(v)) for v in x[bad[:5]]])


def test_compiled_pcu_stands_down_for_any_replaced_function(kernels, monkeypatch):
    # Every function the compiled run stands for (pcu._REPLACED: fp32's arithmetic, the tails, the lane reduction),
    # replaced, sends the unit to its numpy form; a replaced tail function is then the one the numpy form calls.
    from sw.model import pcu, tail
    from sw.tile import random_kernels as rk

    names = {(module.__name__, name) for module, name, _ in pcu._REPLACED}
    for want in (("sw.model.fp32", "mul"), ("sw.model.fp32", "maxmin"), ("sw.model.fp32", "lane_sums"),
                 ("sw.model.tail", "exp"), ("sw.model.tail", "silu"), ("sw.model.pcu", "reduce_lanes")):
        assert want in names
    kernel = next(k for k in map(rk.pcu_kernel, range(200))
                  if pcu.PcuModel(k.params, k.config)._compiled is not None and k.config.tail == "exp")
    model = pcu.PcuModel(kernel.params, kernel.config)
    assert model._kernels() is kernels
    for module, name, _ in pcu._REPLACED:
        with monkeypatch.context() as m:
            m.setattr(module, name, lambda *a, **k: None)
            assert model._kernels() is None, name
    calls = []
    with monkeypatch.context() as m:
        m.setattr(tail, "exp", lambda x: calls.append(1) or np.zeros(np.shape(x), np.uint32))
        got = model.run(kernel.vi, kernel.si)
    assert calls and not got.vo.any()
    assert model._kernels() is kernels
