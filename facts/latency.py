"""Latencies the RTL is built with, for the models that estimate cycles without elaborating it.

``hw/`` derives these from its pipelines (``hw.arith``'s units, the tail's
schedule, ``hw.mem.controller``); tests/test_facts_latency.py holds each
figure here equal to the RTL's.
"""

FP32_MUL_LATENCY = 3
FP32_ADD_LATENCY = 3
# Cycles from a memory request's acceptance to its leaving the controller's queue when it is idle.
QUEUE_CYCLES = 2

# Register levels of the tail datapath built with one function; one built with several takes the
# longest (the exp and reciprocal cores are shared and scheduled to fit).
TAIL_LATENCY = {"exp": 8, "recip": 7, "rsqrt": 9, "sigmoid": 15, "silu": 15, "bf16": 3}
TAIL_OPS = ("exp", "recip", "rsqrt", "sigmoid", "silu", "bf16")
# The functions of a PCU's scalar post-processor.
POST_OPS = ("recip", "rsqrt")


def tail_latency(ops):
    """Register levels of a tail built with the functions ``ops`` (lower-case names; 0 when empty)."""
    return max((TAIL_LATENCY[op] for op in ops), default=0)


def pipeline_latency(stages, lanes, tail_ops=TAIL_OPS):
    """Cycles from a PCU firing to its result at the end of the pipeline: stages, tail, lane reduction."""
    return stages * (FP32_MUL_LATENCY + FP32_ADD_LATENCY) + tail_latency(tail_ops) \
        + (lanes.bit_length() - 1) * FP32_ADD_LATENCY


def post_latency(post_ops=POST_OPS):
    """Cycles through a PCU's scalar post-processor, ``func(x * scale + bias)``, with ``post_ops``."""
    return FP32_MUL_LATENCY + FP32_ADD_LATENCY + tail_latency(post_ops) + 1
