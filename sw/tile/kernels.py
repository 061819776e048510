"""Tile-array kernels built with the kernel API: a library used by the RTL testbenches, pytest and bench.

Each builder takes the array parameters, the PCU tail and so0 functions the
array was built with, and a random generator, and returns an
:class:`ArrayCase`: the program, its host inputs, and a float64 reference of
what the kernel means, so one case checks RTL against model (bit for bit)
and model against mathematics (within a stated tolerance).
"""

from dataclasses import dataclass
from typing import Callable

import numpy as np

from hw.tile.pcu import TailOp
from sw.golden import arith as g
from sw.tile.kernel import Kernel, Program
from sw.tile.pcu import PcuConfig, Stage
from sw.tile.pmu import AddressPattern, PmuConfig, ReadMode


def bits(x):
    """fp32 bit patterns (uint32) of float values."""
    return np.asarray(x, dtype=np.float32).view(np.uint32)


def floats(u):
    """float64 values of fp32 bit patterns."""
    return np.asarray(u, dtype=np.uint32).view(np.float32).astype(np.float64)


def bf16_round(x):
    """Round float values to bf16 and return their fp32 bit patterns."""
    return g.bf16_to_fp32(g.fp32_to_bf16(bits(x)))


def rel_error(got, want):
    """Largest error relative to the largest magnitude wanted (robust where a result cancels to near 0)."""
    want = np.asarray(want, dtype=np.float64)
    return float(np.max(np.abs(floats(got).reshape(want.shape) - want)) / max(np.max(np.abs(want)), 1e-30))


def rows_last(groups, rows):
    """``last`` flags for ``groups`` groups of ``rows`` vectors each."""
    return np.tile(np.arange(rows) == rows - 1, groups)


@dataclass
class ArrayCase:
    """One kernel: program, host inputs, and ``error(outputs)``, the deviation from float64 math."""

    name: str
    program: Program
    inputs: dict
    error: Callable
    tolerance: float


def _functions(ops, pos):
    return {op.name.lower() for op in ops.get(pos, ())} if isinstance(ops, dict) else \
        {op.name.lower() for op in ops}


def _buffer(params, rows, *, buffers=1, reads=1, passes=0, mode=ReadMode.ROW):
    """A PMU holding ``rows`` vectors per fill, read back ``reads`` times per fill."""
    lanes = params.lanes
    words = rows * lanes
    read = AddressPattern.linear(words, 1) if mode == ReadMode.BROADCAST else AddressPattern.linear(rows, lanes)
    return PmuConfig(write=AddressPattern.linear(rows, lanes), read=read, read_mode=mode, buffers=buffers,
                     buffer_words=words if buffers > 1 else 0, reads_per_fill=reads, write_passes=passes,
                     read_passes=passes * reads)


def gemv_bias_act(params, tail_ops, post_ops, rng, *, k=16, tiles=3):
    """y = act(x @ W + b), ``tiles * lanes`` outputs, x broadcast from a PMU into a systolic PCU.

    The activation is SiLU when the second PCU has it, else exp, else none.
    """
    lanes = params.lanes
    mid = (0, 2) if params.cols > 2 else (1, 1)
    built = _functions(tail_ops, mid)
    act = "silu" if "silu" in built else "exp" if "exp" in built else "none"
    kern = Kernel(params, tail_ops=tail_ops, post_ops=post_ops)
    x_in = kern.host_input("x", col=1)
    w_in = kern.host_input("w", col=0)
    b_in = kern.host_input("bias", col=2) if params.cols > 2 else kern.host_input("bias", col=0, side="b")
    xbuf = kern.pmu((0, 1), _buffer(params, k // lanes, reads=tiles, passes=1, mode=ReadMode.BROADCAST),
                    name="xbuf")
    mac = kern.pcu((0, 0), PcuConfig(inputs=(0, 1), group_src=0, systolic=True, systolic_rows=1), name="mac")
    post = kern.pcu(mid, PcuConfig(inputs=(0, 1), stages=(Stage("add", "r0", "r1"),), tail=act), name="bias_act")
    y_out = kern.host_output("y", col=mid[1])
    kern.connect(x_in.out, xbuf.vi0)
    kern.connect(xbuf.vo0, mac.vi0)
    kern.connect(w_in.out, mac.vi1)
    kern.connect(mac.vo0, post.vi0)
    kern.connect(b_in.out, post.vi1)
    kern.connect(post.vo0, y_out.inp)

    x = bf16_round(rng.standard_normal(k) * 0.5)
    w = bf16_round(rng.standard_normal((k, tiles * lanes)) * 0.5)
    b = bits(rng.standard_normal(tiles * lanes).astype(np.float32))
    w_stream = w.reshape(k, tiles, lanes).transpose(1, 0, 2).reshape(tiles * k, lanes)
    inputs = {"x": (x.reshape(-1, lanes), rows_last(1, k // lanes)), "w": (w_stream, rows_last(tiles, k)),
              "bias": (b.reshape(tiles, lanes), np.ones(tiles, bool))}
    f = {"silu": lambda v: v / (1 + np.exp(-v)), "exp": np.exp, "none": lambda v: v}[act]

    def error(outputs):
        want = f(floats(x) @ floats(w) + floats(b))
        return rel_error(outputs["y"][0].reshape(-1), want)
    return ArrayCase(f"gemv_bias_{act}", kern.build(), inputs, error, 1e-5)


def softmax(params, tail_ops, post_ops, rng, *, rows=8, vectors=3):
    """Softmax of ``vectors`` vectors of ``rows * lanes`` values: max, subtract and exp with the sum, scale.

    PMUs hold each vector between passes, double-buffered: x for the second
    pass, exp(x - max) until the reciprocal sum is known.
    """
    lanes = params.lanes
    kern = Kernel(params, tail_ops=tail_ops, post_ops=post_ops)
    x_in = kern.host_input("x", col=0)
    peak = kern.pcu((0, 0), PcuConfig(reduce="max", vo=False, so="group"), name="max")
    xbuf = kern.pmu((0, 1), _buffer(params, rows, buffers=2), name="xbuf")
    expo = kern.pcu((0, 2), PcuConfig(s0="per_group", stages=(Stage("sub", "r0", "s0"),), tail="exp",
                                      reduce="sum", so="group", so_func="recip"), name="exp_sum")
    ebuf = kern.pmu((1, 2), _buffer(params, rows, buffers=2), name="ebuf")
    scale = kern.pcu((1, 3), PcuConfig(s0="per_group", stages=(Stage("mul", "r0", "s0"),)), name="scale")
    y_out = kern.host_output("y", col=3)
    kern.connect(x_in.out, [peak.vi0, xbuf.vi0])
    kern.connect(peak.so0, expo.si0)
    kern.connect(xbuf.vo0, expo.vi0)
    kern.connect(expo.vo0, ebuf.vi0)
    kern.connect(expo.so0, scale.si0)
    kern.connect(ebuf.vo0, scale.vi0)
    kern.connect(scale.vo0, y_out.inp)

    x = bits(rng.standard_normal((vectors, rows * lanes)).astype(np.float32) * 3)
    inputs = {"x": (x.reshape(-1, lanes), rows_last(vectors, rows))}

    def error(outputs):
        v = floats(x)
        e = np.exp(v - v.max(axis=1, keepdims=True))
        return rel_error(outputs["y"][0].reshape(vectors, -1), e / e.sum(axis=1, keepdims=True))
    return ArrayCase("softmax", kern.build(), inputs, error, 1e-5)


def rmsnorm(params, tail_ops, post_ops, rng, *, rows=8, vectors=3, eps=1e-5):
    """y = x * rsqrt(mean(x^2) + eps) * w over ``vectors`` vectors of ``rows * lanes`` values."""
    lanes, n = params.lanes, rows * params.lanes
    kern = Kernel(params, tail_ops=tail_ops, post_ops=post_ops)
    x_in = kern.host_input("x", col=0)
    w_in = kern.host_input("w", col=2)
    stats = kern.pcu((0, 0), PcuConfig(stages=(Stage("mul", "r0", "r0", dst="r1"),), out_src="r1", reduce="sum",
                                       vo=False, so="group", so_scale=1.0 / n, so_bias=eps, so_func="rsqrt"),
                     name="stats")
    xbuf = kern.pmu((0, 1), _buffer(params, rows, buffers=2), name="xbuf")
    norm = kern.pcu((0, 2), PcuConfig(inputs=(0, 1), s0="per_group",
                                      stages=(Stage("mul", "r0", "s0"), Stage("mul", "r0", "r1"))), name="norm")
    y_out = kern.host_output("y", col=2)
    kern.connect(x_in.out, [stats.vi0, xbuf.vi0])
    kern.connect(stats.so0, norm.si0)
    kern.connect(xbuf.vo0, norm.vi0)
    kern.connect(w_in.out, norm.vi1)
    kern.connect(norm.vo0, y_out.inp)

    x = bits(rng.standard_normal((vectors, n)).astype(np.float32))
    w = bits(rng.uniform(0.5, 1.5, n).astype(np.float32))
    inputs = {"x": (x.reshape(-1, lanes), rows_last(vectors, rows)),
              "w": (np.tile(w.reshape(-1, lanes), (vectors, 1)), rows_last(vectors, rows))}

    def error(outputs):
        v = floats(x)
        want = v / np.sqrt(np.mean(v * v, axis=1, keepdims=True) + eps) * floats(w)
        return rel_error(outputs["y"][0].reshape(vectors, -1), want)
    return ArrayCase("rmsnorm", kern.build(), inputs, error, 1e-5)


def gemm(params, tail_ops, post_ops, rng, *, k=12, tiles=3):
    """C = A @ B, A (tiles * stages) x k, B k x (2 * lanes), on two systolic PCUs sharing A by multicast.

    Each PCU keeps its half of B in a PMU and reads it once per tile of A.
    """
    lanes, s = params.lanes, params.stages
    kern = Kernel(params, tail_ops=tail_ops, post_ops=post_ops)
    a_in = kern.host_input("a", col=0)
    b_in = [kern.host_input("b0", col=1), kern.host_input("b1", col=2)]
    cfg = PcuConfig(inputs=(0, 1), group_src=0, systolic=True, systolic_rows=s)
    pcus = [kern.pcu((0, 0), cfg, name="mm0"), kern.pcu((1, 1), cfg, name="mm1")]
    bufs = [kern.pmu((0, 1), _buffer(params, k, reads=tiles, passes=1), name="b0buf"),
            kern.pmu((1, 2), _buffer(params, k, reads=tiles, passes=1), name="b1buf")]
    outs = [kern.host_output("c0", col=0), kern.host_output("c1", col=1)]
    kern.connect(a_in.out, [pcus[0].vi0, pcus[1].vi0])
    for j in range(2):
        kern.connect(b_in[j].out, bufs[j].vi0)
        kern.connect(bufs[j].vo0, pcus[j].vi1)
        kern.connect(pcus[j].vo0, outs[j].inp)

    a = bf16_round(rng.standard_normal((tiles * s, k)))
    b = bf16_round(rng.standard_normal((k, 2 * lanes)))
    a_cols = np.zeros((tiles, k, lanes), np.uint32)
    a_cols[:, :, :s] = a.reshape(tiles, s, k).transpose(0, 2, 1)
    inputs = {"a": (a_cols.reshape(-1, lanes), rows_last(tiles, k)),
              "b0": (b[:, :lanes], rows_last(1, k)), "b1": (b[:, lanes:], rows_last(1, k))}

    def error(outputs):
        got = np.concatenate([outputs["c0"][0], outputs["c1"][0]], axis=1)
        return rel_error(got, floats(a) @ floats(b))
    return ArrayCase("gemm", kern.build(), inputs, error, 1e-5)


KERNELS = {"gemv": gemv_bias_act, "softmax": softmax, "rmsnorm": rmsnorm, "gemm": gemm}


def kernels_for(params, tail_ops, post_ops):
    """Names of the kernels this array can run: the 2-column arrays run only GEMV."""
    if params.cols < 4 or params.rows < 2:
        return ["gemv"]
    needs = {"softmax": [((0, 2), tail_ops, "exp"), ((0, 2), post_ops, "recip")],
             "rmsnorm": [((0, 0), post_ops, "rsqrt")]}
    return [name for name in KERNELS
            if all(fn in _functions(ops, pos) for pos, ops, fn in needs.get(name, []))]


TEST_TAIL = {(0, 2): (TailOp.EXP, TailOp.SILU)}
TEST_POST = {(0, 2): (TailOp.RECIP,), (0, 0): (TailOp.RSQRT,)}
