"""PCU kernels used by the RTL testbench and the fast model's tests.

Each case builds a :class:`PcuConfig`, its inputs, and a float64 reference of
what the kernel means, so the same case checks RTL against model (bit for
bit) and model against mathematics (within a stated tolerance).
"""

from dataclasses import dataclass
from typing import Callable

import numpy as np

from sw.tile.kernels import bf16_round, bits, floats
from sw.tile.pcu import PcuConfig, Stage, f32


@dataclass
class Inputs:
    vi: dict
    si: dict


@dataclass(frozen=True)
class PcuCase:
    name: str
    config: PcuConfig
    make: Callable      # (params, rng) -> (Inputs, reference(result) -> max relative error)
    tolerance: float    # bound on the reference error that the arithmetic justifies


def _groups(rng, n_groups, max_len):
    sizes = rng.integers(1, max_len + 1, n_groups)
    last = np.zeros(int(sizes.sum()), dtype=bool)
    last[np.cumsum(sizes) - 1] = True
    return sizes, last


def _rel(got, want):
    want = np.asarray(want, dtype=np.float64)
    scale = np.maximum(np.abs(want), 1e-30)
    return float(np.max(np.abs(floats(got) - want) / scale)) if want.size else 0.0


def _scale_relu(params, rng):
    sizes, last = _groups(rng, 6, 4)
    n = len(last)
    x = rng.standard_normal((n, params.lanes)).astype(np.float32)
    y = rng.standard_normal((n, params.lanes)).astype(np.float32)
    s = rng.standard_normal(len(sizes)).astype(np.float32)
    inputs = Inputs({0: (bits(x), last), 1: (bits(y), last)}, {0: bits(s)})
    group = np.repeat(np.arange(len(sizes)), sizes)

    def reference(result):
        want = np.maximum(x.astype(np.float64) * s[group, None] + 0.5, y)
        return _rel(result.vo, want)
    return inputs, reference


def _tail(fn, lo, hi, ref):
    def make(params, rng):
        n = 40
        x = rng.uniform(lo, hi, (n, params.lanes)).astype(np.float32)
        last = np.ones(n, dtype=bool)
        return Inputs({0: (bits(x), last)}, {}), lambda result: _rel(result.vo, ref(x.astype(np.float64)))
    return make


def _softmax_exp(params, rng):
    sizes, last = _groups(rng, 5, 3)
    x = rng.standard_normal((len(last), params.lanes)).astype(np.float32) * 3
    group = np.repeat(np.arange(len(sizes)), sizes)
    m = np.array([x[group == k].max() for k in range(len(sizes))], dtype=np.float32)
    inputs = Inputs({0: (bits(x), last)}, {0: bits(m)})

    def reference(result):
        e = np.exp(x.astype(np.float64) - m[group, None])
        sums = np.array([e[group == k].sum() for k in range(len(sizes))])
        return max(_rel(result.vo, e), _rel(result.so, 1 / sums))
    return inputs, reference


def _rms_stats(params, rng):
    sizes, last = _groups(rng, 6, 4)
    x = rng.standard_normal((len(last), params.lanes)).astype(np.float32)
    group = np.repeat(np.arange(len(sizes)), sizes)

    def reference(result):
        ms = np.array([np.mean(x[group == k].astype(np.float64) ** 2) for k in range(len(sizes))])
        # so_scale is fixed at 1/(4 lanes): the mean over one chunk's lanes, summed over chunks.
        want = 1 / np.sqrt(ms * sizes + 1e-5)
        return _rel(result.so, want)
    return Inputs({0: (bits(x), last)}, {}), reference


def _row_max(params, rng):
    sizes, last = _groups(rng, 8, 3)
    x = rng.standard_normal((len(last), params.lanes)).astype(np.float32)
    group = np.repeat(np.arange(len(sizes)), sizes)

    def reference(result):
        return _rel(result.so, [x[group == k].max() for k in range(len(sizes))])
    return Inputs({0: (bits(x), last)}, {}), reference


def _gemm(params, rng, *, rows=None, tiles=3, k=7):
    rows = rows or params.stages
    a = bf16_round(rng.standard_normal((tiles, k, params.lanes)))  # lanes 0..rows-1: A column
    b = bf16_round(rng.standard_normal((tiles, k, params.lanes)))  # B row
    last = np.tile(np.arange(k) == k - 1, tiles)

    def reference(result):
        fa, fb = floats(a), floats(b)
        want = np.einsum("tks,tkl->tsl", fa[:, :, :rows], fb).reshape(tiles * rows, params.lanes)
        return _rel(result.vo, want)
    return Inputs({0: (a.reshape(-1, params.lanes), last), 1: (b.reshape(-1, params.lanes), last)}, {}), reference


def cases(params):
    """The PCU kernel cases for ``params``."""
    lanes = params.lanes
    return [
        PcuCase("scale_relu", PcuConfig(inputs=(0, 1), s0="per_group", stages=(
            Stage("fma", "r0", "s0", "const", "r0", f32(0.5)), Stage("max", "r0", "r1", dst="r0"))),
            _scale_relu, 1e-6),
        PcuCase("tail_exp", PcuConfig(tail="exp"), _tail("exp", -20, 20, np.exp), 1e-6),
        PcuCase("tail_recip", PcuConfig(tail="recip"), _tail("recip", 0.01, 1000, lambda x: 1 / x), 1e-6),
        PcuCase("tail_rsqrt", PcuConfig(tail="rsqrt"), _tail("rsqrt", 1e-3, 1e4, lambda x: x ** -0.5), 1e-6),
        PcuCase("tail_silu", PcuConfig(tail="silu"), _tail("silu", -12, 12, lambda x: x / (1 + np.exp(-x))), 1e-5),
        PcuCase("softmax_exp_sum", PcuConfig(s0="per_group", stages=(Stage("sub", "r0", "s0"),), tail="exp",
                                             reduce="sum", so="group", so_func="recip"), _softmax_exp, 1e-5),
        PcuCase("rmsnorm_stats", PcuConfig(stages=(Stage("mul", "r0", "r0", dst="r1"),), reduce="sum",
                                           out_src="r1", vo=False, so="group", so_scale=1.0 / lanes,
                                           so_bias=1e-5, so_func="rsqrt"), _rms_stats, 1e-5),
        PcuCase("row_max", PcuConfig(reduce="max", vo=False, so="group"), _row_max, 0.0),
        PcuCase("gemm", PcuConfig(inputs=(0, 1), group_src=1, systolic=True, systolic_rows=params.stages),
                _gemm, 1e-5),
        PcuCase("gemv_bias_silu", PcuConfig(inputs=(0, 1), group_src=1, systolic=True, systolic_rows=1,
                                            stages=(Stage("add", "r0", "const", const=f32(0.25)),), tail="silu"),
                lambda p, rng: _gemv_silu(p, rng), 1e-5),
        # A systolic operand: each drained row takes a vector from vi2 into r1.
        PcuCase("gemv_residual", PcuConfig(inputs=(0, 1, 2), group_src=1, systolic=True, systolic_rows=1,
                                           systolic_operand=True, stages=(Stage("add", "r0", "r1"),)),
                lambda p, rng: _operand(p, rng, lambda acc, v: acc + v), 1e-5),
        PcuCase("gemm_operand_mul", PcuConfig(inputs=(0, 1, 2), group_src=0, systolic=True,
                                              systolic_rows=params.stages, systolic_operand=True,
                                              stages=(Stage("mul", "r0", "r1"),)),
                lambda p, rng: _operand(p, rng, lambda acc, v: acc * v, rows=p.stages), 1e-5),
        PcuCase("gemv_fma_operand_silu", PcuConfig(inputs=(0, 1, 2), group_src=1, systolic=True, systolic_rows=1,
                                                   systolic_operand=True, tail="silu",
                                                   stages=(Stage("fma", "r0", "const", "r1", const=f32(-0.75)),)),
                lambda p, rng: _operand(p, rng, lambda acc, v: _silu(acc * -0.75 + v)), 1e-5),
        # Drained rows reduced to so0: attention scores (q.K^T scaled, the mask joined on vi2, the max of each
        # head's rows folded over vi2's groups), and row sums of GEMM tiles without an operand.
        PcuCase("attention_scores_max", PcuConfig(inputs=(0, 1, 2), group_src=0, systolic=True, systolic_rows=1,
                                                  systolic_operand=True, reduce="max", so="group",
                                                  stages=(Stage("mul", "r0", "const", const=f32(_SCALE)),
                                                          Stage("add", "r0", "r1"))),
                _attention_scores, 1e-5),
        PcuCase("gemm_row_means", PcuConfig(inputs=(0, 1), group_src=1, systolic=True, systolic_rows=params.stages,
                                            reduce="sum", so="every", so_scale=1.0 / lanes), _row_means, 1e-5),
        PcuCase("gemm_tile_sum", PcuConfig(inputs=(0, 1), group_src=0, systolic=True, systolic_rows=params.stages,
                                           tail="exp", reduce="sum", vo=False, so="group", so_func="recip"),
                _tile_sums, 1e-5),
    ]


_SCALE = 32 ** -0.5
_MASKED = -1.0e30


def _attention_scores(params, rng, *, heads=3, blocks=3, hd=6):
    """Per head, ``blocks`` drained rows of ``lanes`` keys: q.k * scale + mask; so0 is each head's max score."""
    L = params.lanes
    q = bf16_round(rng.standard_normal((heads, hd)))
    k = bf16_round(rng.standard_normal((heads, blocks, hd, L)))  # K^T, one block of L keys per drained row
    a = np.repeat(np.repeat(q[:, None, :, None], blocks, axis=1), L, axis=3)  # q[d] broadcast across lanes
    pos = rng.integers(0, blocks * L, heads)  # keys past pos are masked, as in a causal mask
    mask = np.where(np.arange(blocks * L)[None, :] <= pos[:, None], 0.0, _MASKED).astype(np.float32)
    last = np.tile(np.arange(hd) == hd - 1, heads * blocks)
    m_last = np.tile(np.arange(blocks) == blocks - 1, heads)

    def reference(result):
        scores = np.einsum("hd,hbdl->hbl", floats(q), floats(k)) * np.float64(np.float32(_SCALE))
        scores = scores + mask.reshape(heads, blocks, L)
        return max(_rel(result.vo, scores.reshape(-1, L)), _rel(result.so, scores.reshape(heads, -1).max(axis=1)))
    return Inputs({0: (a.reshape(-1, L), last), 1: (k.reshape(-1, L), last),
                   2: (bits(mask.reshape(-1, L)), m_last)}, {}), reference


def _positive_tiles(params, rng, tiles, k):
    a = bf16_round(np.abs(rng.standard_normal((tiles, k, params.lanes))))
    b = bf16_round(np.abs(rng.standard_normal((tiles, k, params.lanes))))
    last = np.tile(np.arange(k) == k - 1, tiles)
    acc = np.einsum("tks,tkl->tsl", floats(a)[:, :, :params.stages], floats(b))
    return Inputs({0: (a.reshape(-1, params.lanes), last), 1: (b.reshape(-1, params.lanes), last)}, {}), acc


def _row_means(params, rng, tiles=4, k=5):
    """Every drained row of a GEMM tile (positive terms: no cancellation) and its mean on so0."""
    inputs, acc = _positive_tiles(params, rng, tiles, k)
    return inputs, lambda result: max(_rel(result.vo, acc.reshape(-1, params.lanes)),
                                      _rel(result.so, acc.mean(axis=2).reshape(-1)))


def _tile_sums(params, rng, tiles=4, k=5):
    """1 / the sum of exp over each GEMM tile's drained rows (positive terms), on so0 alone."""
    inputs, acc = _positive_tiles(params, rng, tiles, k)
    return inputs, lambda result: _rel(result.so, 1 / np.exp(acc).sum(axis=(1, 2)))


def _silu(y):
    return y / (1 + np.exp(-y))


def _operand(params, rng, combine, *, rows=1, tiles=5, k=6):
    """A GEMM (``rows`` > 1) or GEMV tile per group whose drained rows are combined with a vi2 stream."""
    a = bf16_round(rng.standard_normal((tiles, k, params.lanes)))
    if rows == 1:
        a[:] = a[:, :, :1]  # x[k] broadcast across lanes
    b = bf16_round(rng.standard_normal((tiles, k, params.lanes)))
    v = rng.standard_normal((tiles * rows, params.lanes)).astype(np.float32)
    last = np.tile(np.arange(k) == k - 1, tiles)
    # vi2's last flags become the outputs': here only the final row's, one group over the whole run.
    v_last = np.arange(tiles * rows) == tiles * rows - 1

    def reference(result):
        acc = np.einsum("tks,tkl->tsl", floats(a)[:, :, :rows], floats(b)).reshape(tiles * rows, params.lanes)
        return _rel(result.vo, combine(acc, v.astype(np.float64)))
    return Inputs({0: (a.reshape(-1, params.lanes), last), 1: (b.reshape(-1, params.lanes), last),
                   2: (bits(v), v_last)}, {}), reference


def _gemv_silu(params, rng, tiles=4, k=9):
    x = bf16_round(rng.standard_normal((tiles, k)))
    w = bf16_round(rng.standard_normal((tiles, k, params.lanes)))
    a = np.repeat(x[:, :, None], params.lanes, axis=2)  # x[k] broadcast across lanes
    last = np.tile(np.arange(k) == k - 1, tiles)

    def reference(result):
        y = np.einsum("tk,tkl->tl", floats(x), floats(w)) + 0.25
        return _rel(result.vo, y / (1 + np.exp(-y)))
    return Inputs({0: (a.reshape(-1, params.lanes), last), 1: (w.reshape(-1, params.lanes), last)}, {}), reference
