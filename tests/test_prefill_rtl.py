"""Batched prefill on the co-simulated chip (RTL) against the fast model.

A one-layer model with grouped KV heads, prompt of 10 tokens, context 16: the 9 positions before the last
prompt token run as two prefill chunks of 8 (the second padded), then the last prompt token and the new
tokens as decode steps. The RTL's logits are bit-identical to the fast model's and to token-by-token
decoding, the tokens equal, the prefill's kernel cycles within 10% of the fast model's estimate and the
bytes the tier controllers count equal.
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

PROMPT = [3, 17, 5, 9, 44, 2, 61, 7, 30, 12]
NEW = 2


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefill-rtl")
    path = make_checkpoint(root / "ckpt", **SHAPES["gqa-untied"])   # 1 layer, 4 heads over 2 KV heads
    model = compile_model(path, CHIP, context=16, prefill=True)
    save(model, root / "model.pkl")
    return model, root / "model.pkl"


def test_rtl_prefill_is_bit_identical_to_the_fast_model(compiled):
    from cosim.decode import run_rtl

    model, path = compiled
    assert not model.prefill_note
    assert [(start, c.block) for start, c in model.prefill_chunks(len(PROMPT) - 1)] == [(0, 8), (8, 8)]
    request = {"prompt_ids": PROMPT, "max_new_tokens": NEW, "temperature": 0.0, "top_k": 0, "seed": 0,
               "prefill": True}
    got = run_rtl(path, request)
    want = asyncio.run(generate(ModelDevice(CHIP), model, PROMPT, max_new_tokens=NEW, prefill=True))
    stepped = asyncio.run(generate(ModelDevice(CHIP), model, PROMPT, max_new_tokens=NEW, keep_logits=True))
    assert got["logits_sha"] == want["logits_sha"], "RTL logits after prefill differ from the fast model's"
    assert got["tokens"] == want["tokens"] == stepped["tokens"]
    prefill_rtl, prefill_model = got["report"]["prefill"], want["report"]["prefill"]
    assert prefill_rtl["positions"] == len(PROMPT) - 1 and prefill_rtl["chunks"] == 2
    ratio = prefill_model["kernel_cycles"] / prefill_rtl["kernel_cycles"]
    assert abs(ratio - 1) <= 0.10, f"model/RTL prefill kernel cycles {ratio}"
    for key in ("hbm_read", "hbm_written"):
        assert prefill_rtl[key] == prefill_model[key], key
    # The last prompt token's step and the new tokens' steps see the same KV cache as token by token.
    import hashlib
    digest = hashlib.sha256()
    for logits in stepped["logits"][len(PROMPT) - 1:]:
        digest.update(np.asarray(logits, np.float32).tobytes())
    assert got["logits_sha"] == digest.hexdigest()
    assert got["report"]["prompt_cycles"] < stepped["report"]["prompt_cycles"]
