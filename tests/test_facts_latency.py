"""The latencies in facts/latency.py, which the fast models use, are the RTL's."""

import itertools

from facts import latency as f
from hw.arith.add import Fp32Add
from hw.arith.mul import Fp32Mul
from hw.arith.tail import TailOp, tail_latency
from hw.mem.controller import QUEUE_CYCLES
from hw.tile.pcu import ALL_TAIL_OPS, POST_OPS, ScalarPost, pipeline_latency
from sw.target import TARGETS


def test_units_and_queue():
    assert (f.FP32_MUL_LATENCY, f.FP32_ADD_LATENCY, f.QUEUE_CYCLES) == (Fp32Mul.LATENCY, Fp32Add.LATENCY, QUEUE_CYCLES)
    assert f.TAIL_OPS == tuple(op.name.lower() for op in ALL_TAIL_OPS)
    assert f.POST_OPS == tuple(op.name.lower() for op in POST_OPS)


def test_tail_latency_of_every_function_set():
    ops = [op for op in TailOp if op != TailOp.NONE]
    for r in range(len(ops) + 1):
        for subset in itertools.combinations(ops, r):
            assert f.tail_latency([op.name.lower() for op in subset]) == tail_latency(subset), subset


def test_pipeline_and_post_latency():
    for target in TARGETS.values():
        p = target.array
        for ops in (ALL_TAIL_OPS, POST_OPS, ()):
            names = [op.name.lower() for op in ops]
            assert f.pipeline_latency(p.stages, p.lanes, names) == pipeline_latency(p, ops)
            assert f.post_latency(names) == ScalarPost.latency(ops)
