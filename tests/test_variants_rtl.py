"""Odd sizes and biases on the co-simulated chip (RTL): bit-identical to the fast model.

One layer with every size padded (hidden 18 over 3 heads of 6 -> 8, intermediate 37 -> 40, vocab
50 -> 52) and all seven of Llama's biases (``attention_bias`` and ``mlp_bias``): the bias PCU after
each GEMV, the padded RMSNorm mean, RoPE tables and attention scale run on the RTL with the fast
model's logits bit for bit, its tokens, and kernel cycles within 10%.
"""

import asyncio

import numpy as np
import pytest

from sw.compiler.compile import compile_model
from sw.compiler.program import save
from sw.runtime.decode import generate
from sw.runtime.device import ModelDevice
from sw.target import CHIP
from tests.llama_checkpoints import make_checkpoint

PROMPT = [3, 17, 5, 9]
NEW = 3
SHAPE = dict(hidden_size=18, intermediate_size=37, num_hidden_layers=1, num_attention_heads=3, num_key_value_heads=1,
             vocab_size=50, tie_word_embeddings=False, attention_bias=True, mlp_bias=True, eos_token_id=None,
             bos_token_id=None, pad_token_id=None)


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    root = tmp_path_factory.mktemp("rtl-odd")
    compiled = compile_model(make_checkpoint(root / "ckpt", **SHAPE), CHIP, context=8)
    save(compiled, root / "fused.rdu")
    return compiled, root / "fused.rdu"


def test_odd_sizes_and_biases_on_the_rtl(program):
    from cosim.decode import run_rtl

    compiled, path = program
    assert "padding (zeros, invisible in results): hidden 18 -> 20" in compiled.summary()
    got = run_rtl(path, {"prompt_ids": PROMPT, "max_new_tokens": NEW, "temperature": 0.0, "top_k": 0, "seed": 0})
    want = asyncio.run(generate(ModelDevice(CHIP), compiled, PROMPT, max_new_tokens=NEW))
    assert got["report"]["backend"] == "rtl"
    assert got["logits_sha"] == want["logits_sha"], "RTL logits differ from the fast model's"
    assert got["tokens"] == want["tokens"]
    ratio = np.array(want["step_kernel_cycles"]) / np.array(got["step_kernel_cycles"])
    assert np.all(np.abs(ratio - 1) <= 0.10), f"model/RTL kernel cycles per step {ratio}"
