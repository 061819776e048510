"""A one-layer model decoded on the co-simulated chip (RTL) against the fast model, fused and unfused.

Both backends run the same runtime; the chip's logits must be bit-identical
to the fast model's at every step, the tokens the same, and the kernel cycles
within 10%. One simulation of the ``chip`` unit runs both programs.
"""

import asyncio

import numpy as np
import pytest

from tests.llama_checkpoints import SHAPES, make_checkpoint
from sw.compiler.compile import compile_model
from sw.compiler.program import save
from sw.runtime.decode import generate
from sw.runtime.device import ModelDevice
from sw.target import CHIP

PROMPT = [3, 17, 5, 9]
NEW = 3


@pytest.fixture(scope="module")
def one_layer(tmp_path_factory):
    root = tmp_path_factory.mktemp("rtl")
    path = make_checkpoint(root / "ckpt", **SHAPES["gqa-untied"])   # 1 layer, 4 heads over 2 KV heads
    compiled = {mode: compile_model(path, CHIP, mode=mode, context=16) for mode in ("fused", "unfused")}
    paths = {}
    for mode, c in compiled.items():
        paths[mode] = root / f"{mode}.pkl"
        save(c, paths[mode])
    return compiled, paths


def test_rtl_decode_is_bit_identical_to_the_fast_model(one_layer):
    from cosim.decode import run_rtl

    compiled, paths = one_layer
    request = {"prompt_ids": PROMPT, "max_new_tokens": NEW, "temperature": 0.0, "top_k": 0, "seed": 0}
    seen = []
    rtl = run_rtl([paths["fused"], paths["unfused"]], request, progress=lambda *a: seen.append(a))
    for mode, got in zip(("fused", "unfused"), rtl):
        want = asyncio.run(generate(ModelDevice(CHIP), compiled[mode], PROMPT, max_new_tokens=NEW))
        assert got["report"]["backend"] == "rtl"
        assert got["logits_sha"] == want["logits_sha"], f"{mode}: RTL logits differ from the fast model's"
        assert got["tokens"] == want["tokens"]
        ratio = np.array(want["step_kernel_cycles"]) / np.array(got["step_kernel_cycles"])
        assert np.all(np.abs(ratio - 1) <= 0.10), f"{mode}: model/RTL kernel cycles per step {ratio}"
        assert got["report"]["kernels_per_token"] == len(compiled[mode].launches(16))
    assert rtl[0]["report"]["cycles_per_token"] < rtl[1]["report"]["cycles_per_token"]
    assert seen, "no progress was reported during the simulation"
