"""The compiler's static estimate (sw/compiler/estimate.py) against the fast model's cycles.

The default model decodes a few greedy tokens inside its first context bucket on the ``chip`` and ``4x8``
targets, fused (host- and chip-orchestrated) and looped; the estimate of that bucket, with the same
orchestration, lies within 10% of the measured cycles per token, in all and in kernels, and charges exactly
the Program Loads the runtime pays (none for a program already resident).
"""

import asyncio

import pytest

from cosim.harness import REPO
from sw.compiler.compile import compile_model
from sw.compiler.estimate import estimate_step
from sw.runtime.decode import generate
from sw.runtime.device import ModelDevice
from sw.target import CHIP, LARGE

CHECKPOINT = REPO / "models" / "pystdlib-tiny"
PROMPT = [0, 449]
NEW_TOKENS = 2
CONTEXT = 8
CASES = [(target, program, orchestration) for target in (CHIP, LARGE)
         for program, orchestration in (("fused", "host"), ("fused", "chip"), ("looped", "chip"))]


@pytest.fixture(scope="module")
def compiled():
    cache = {}

    def get(target, program):
        if (target.name, program) not in cache:
            cache[(target.name, program)] = compile_model(CHECKPOINT, target, mode=program, context=CONTEXT)
        return cache[(target.name, program)]
    return get


@pytest.mark.parametrize("target,program,orchestration", CASES,
                         ids=[f"{t.name}-{p}-{o}" for t, p, o in CASES])
def test_estimate_within_10_percent_of_the_fast_model(compiled, target, program, orchestration):
    c = compiled(target, program)
    tp = c.bucket(0)[0]
    assert c.bucket(len(PROMPT) + NEW_TOKENS - 2)[0] == tp
    report = asyncio.run(generate(ModelDevice(target), c, PROMPT, max_new_tokens=NEW_TOKENS,
                                  orchestration=orchestration))["report"]
    est = estimate_step(c, tp, orchestration)
    assert est["kernel_cycles"] == pytest.approx(report["kernel_cycles_per_token"], rel=0.10)
    assert est["cycles"] == pytest.approx(report["cycles_per_token"], rel=0.10)
    assert est["program_load_cycles"] == report["program_load_cycles_per_token"]
    assert est["launch_cycles"] == pytest.approx(report["launch_cycles_per_token"], rel=0.10)
    assert est["host_io_cycles"] == report["host_io_cycles_per_token"]

