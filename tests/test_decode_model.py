"""End-to-end decode on the fast-model backend: the runtime against transformers.

The default model (models/pystdlib-tiny) is compiled once for the co-simulated
chip's target with a 64-position context; its greedy generation must be
token for token what ``LlamaForCausalLM.generate`` produces, and every step's
logits must match transformers' float32 forward over the same tokens. A small
random-weight checkpoint (about 0.1 s a step) covers sampling, end of
sequence and the weight tiers; bad requests are refused before anything runs.
"""

import asyncio
import dataclasses
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sw.compiler.compile import compile_model  # noqa: E402
from sw.runtime.decode import DecodeError, generate, sample  # noqa: E402
from sw.runtime.device import ModelDevice  # noqa: E402
from sw.target import CHIP, LARGE  # noqa: E402
from tests.llama_checkpoints import SHAPES, make_checkpoint, transformers_logits  # noqa: E402

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "pystdlib-tiny"
CONTEXT = 64
PROMPT = "import os\n"
NEW_TOKENS = 32

# Same bound as tests/test_compile.py: bf16 weights held exactly in fp32, fp32 arithmetic that differs from
# torch's only in summation order and the tail units (rsqrt, exp, reciprocal), so ~1e-6 of the largest
# |logit|; 1e-4 of it leaves two orders of margin and still catches any mapping error.
RTOL = 1e-4


def run(device_target, compiled, prompt_ids, **kwargs):
    return asyncio.run(generate(ModelDevice(device_target), compiled, prompt_ids, **kwargs))


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(MODEL_DIR)


@pytest.fixture(scope="module")
def prompt_ids(tokenizer):
    ids = tokenizer(PROMPT).input_ids
    # transformers' generate is given the same ids, <s> included (Llama-style tokenizers prepend it).
    assert ids[0] == tokenizer.bos_token_id == 0
    return ids


@pytest.fixture(scope="module")
def default_model():
    return compile_model(MODEL_DIR, CHIP, mode="fused", context=CONTEXT)


@pytest.fixture(scope="module")
def greedy(default_model, prompt_ids):
    return run(CHIP, default_model, prompt_ids, max_new_tokens=NEW_TOKENS, keep_logits=True)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A random-weight 2-layer model, compiled for the chip with a 32-position context."""
    path = make_checkpoint(tmp_path_factory.mktemp("small"), **SHAPES["tiny-tied"])
    return compile_model(path, CHIP, mode="fused", context=32)


def test_greedy_generation_matches_transformers(greedy, prompt_ids):
    model = transformers.LlamaForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32).eval()
    eos = model.generation_config.eos_token_id
    input_ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=NEW_TOKENS,
                             do_sample=False)
    theirs = out[0, len(prompt_ids):].tolist()
    # transformers stops after emitting eos (and keeps it); so does the runtime with stop_at_eos.
    if eos in theirs:
        theirs = theirs[:theirs.index(eos) + 1]
    ours = greedy["tokens"]
    assert ours == theirs
    assert len(ours) == NEW_TOKENS or ours[-1] == eos


def test_chip_orchestration_generates_the_same(greedy, default_model, prompt_ids):
    """The sequencer walking launch lists decodes the 32 tokens transformers does, logits bit for bit."""
    chip = run(CHIP, default_model, prompt_ids, max_new_tokens=NEW_TOKENS, orchestration="chip")
    assert chip["tokens"] == greedy["tokens"] and chip["logits_sha"] == greedy["logits_sha"]
    assert chip["step_kernel_cycles"] == greedy["step_kernel_cycles"]
    assert chip["report"]["cycles_per_token"] < greedy["report"]["cycles_per_token"]


def test_looped_generates_the_same(greedy, prompt_ids):
    """Kernel looping on the 4x8 (a layer one kernel, the four layers one kernel looped over them) decodes the
    32 tokens transformers does, with the logits of the fused 4x8 program bit for bit, in fewer cycles."""
    runs = {mode: run(LARGE, compile_model(MODEL_DIR, LARGE, mode=mode, context=CONTEXT), prompt_ids,
                      max_new_tokens=NEW_TOKENS, orchestration="chip") for mode in ("fused", "looped")}
    assert runs["looped"]["tokens"] == runs["fused"]["tokens"] == greedy["tokens"]
    assert runs["looped"]["logits_sha"] == runs["fused"]["logits_sha"]
    report = {mode: r["report"] for mode, r in runs.items()}
    assert report["looped"]["kernels_per_token"] == 3 < report["fused"]["kernels_per_token"]
    assert report["looped"]["kernel_cycles_per_token"] < report["fused"]["kernel_cycles_per_token"]


def test_teacher_forced_logits_along_the_way(greedy, prompt_ids):
    fed = prompt_ids + greedy["tokens"][:-1]          # the token each step consumed
    ours = greedy["logits"]
    assert ours.shape == (len(fed), 512) and ours.dtype == np.float32
    theirs = transformers_logits(MODEL_DIR, fed)
    scale = float(np.abs(theirs).max())
    err = float(np.abs(ours - theirs).max())
    assert err <= RTOL * scale, f"max |error| {err:.3g} > {RTOL:g} x max |logit| {scale:.3g}"
    # Each generated token is the argmax of the step before it.
    assert [int(i) for i in ours[len(prompt_ids) - 1:].argmax(-1)] == greedy["tokens"]


def test_report(greedy, default_model, prompt_ids):
    r = greedy["report"]
    steps = len(prompt_ids) + len(greedy["tokens"]) - 1
    assert r["backend"] == "model" and r["mode"] == "fused" and r["target"] == "chip"
    assert r["steps"] == steps == len(greedy["step_cycles"])
    assert r["cycles_per_token"] > 0 and r["kernel_cycles_per_token"] > 0
    assert r["cycles_per_token"] == pytest.approx(sum(greedy["step_cycles"]) / steps)
    assert 0 < r["hbm_bandwidth_fraction"] <= 1
    assert 0 < r["hbm_bandwidth_fraction_in_kernels"] <= 1
    assert r["kernels_per_token"] == len(default_model.launches())
    assert all(len(launches) == len(default_model.launches()) for launches in default_model.buckets.values())
    assert r["tokens_per_s_simulated"] == pytest.approx(r["clock_hz"] / r["cycles_per_token"])
    assert r["load"]["weights_tier"] == "hbm" and r["load"]["ddr_to_hbm_bytes"] == 0
    assert r["ddr_bytes_per_token"] == 0
    parts = (r["kernel_cycles_per_token"] + r["program_load_cycles_per_token"] + r["launch_cycles_per_token"]
             + r["host_io_cycles_per_token"])
    assert parts == pytest.approx(r["cycles_per_token"])
    assert len(greedy["logits_sha"]) == 64


@pytest.mark.parametrize("prompt, new, message", [
    ([], 4, "the prompt is empty"),
    ([0, 512], 4, r"prompt token ids \[512\] are outside the vocabulary of 512"),
    ([0, -1, 3], 4, r"prompt token ids \[-1\] are outside the vocabulary of 512"),
    # 6 prompt tokens + 60 new ones need 65 positions (the last token is not fed back).
    ([0, 74, 488, 293, 84, 200], 60, "needs 65 positions; the model was compiled for a context of 64"),
    (list(range(65)), 0, "needs 65 positions; the model was compiled for a context of 64"),
    ([0, 1], -1, "max_new_tokens must be at least 0"),
])
def test_bad_requests(default_model, prompt, new, message):
    with pytest.raises(DecodeError, match=message):
        run(CHIP, default_model, prompt, max_new_tokens=new)


def test_longest_request_fits(small):
    # 2 prompt tokens + 31 new ones need exactly the 32 compiled positions.
    result = run(CHIP, small, [3, 5], max_new_tokens=31, stop_at_eos=False)
    assert len(result["tokens"]) == 31 and result["report"]["steps"] == 32


def test_sampling_is_reproducible(small):
    prompt = [3, 17, 42]
    go = lambda **kw: run(CHIP, small, prompt, max_new_tokens=12, stop_at_eos=False, **kw)["tokens"]
    first = go(temperature=1.5, seed=0)
    assert go(temperature=1.5, seed=0) == first
    others = [go(temperature=1.5, seed=s) for s in (1, 2, 3)]
    assert any(o != first for o in others)
    # top-k = 1 keeps only the largest logit: greedy, whatever the temperature and seed.
    greedy = go()
    assert go(temperature=0.7, top_k=1, seed=5) == greedy
    # top-k sampling stays within the top k of each step.
    result = run(CHIP, small, prompt, max_new_tokens=12, stop_at_eos=False, temperature=2.0, top_k=3, seed=9,
                 keep_logits=True)
    steps = result["logits"][len(prompt) - 1:]
    for token, logits in zip(result["tokens"], steps):
        assert token in np.argsort(logits)[-3:]


def test_sample_function():
    logits = np.array([0.1, 3.0, -2.0, 2.9, 0.0], np.float32)
    assert sample(logits) == 1
    rng = np.random.default_rng(0)
    draws = {sample(logits, temperature=1.0, top_k=2, rng=rng) for _ in range(200)}
    assert draws == {1, 3}
    draws = {sample(logits, temperature=5.0, rng=rng) for _ in range(400)}
    assert draws == set(range(5))


def test_stop_at_eos(small):
    prompt = [3, 17, 42]
    free = run(CHIP, small, prompt, max_new_tokens=6, stop_at_eos=False)["tokens"]
    # Make the model's first greedy token its end-of-sequence token.
    as_eos = dataclasses.replace(small, shape=dataclasses.replace(small.shape, eos_token_id=free[0]))
    assert run(CHIP, as_eos, prompt, max_new_tokens=6)["tokens"] == free[:1]
    assert run(CHIP, as_eos, prompt, max_new_tokens=6, stop_at_eos=False)["tokens"] == free


def test_progress_and_prompt_only(small):
    seen = []
    result = run(CHIP, small, [3, 17, 42, 8], max_new_tokens=0, keep_logits=True,
                 progress=lambda done, total: seen.append((done, total)))
    assert result["tokens"] == [] and result["logits"].shape == (4, SHAPES["tiny-tied"]["vocab_size"])
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_weights_from_ddr(small):
    prompt = [3, 17, 42, 8, 1]
    hbm = run(CHIP, small, prompt, max_new_tokens=3, stop_at_eos=False)
    ddr = run(CHIP, small, prompt, max_new_tokens=3, stop_at_eos=False, weights_tier="ddr")
    assert ddr["logits_sha"] == hbm["logits_sha"] and ddr["tokens"] == hbm["tokens"]
    load = ddr["report"]["load"]
    weights = sum(r.nbytes for r in small.memory_map.regions.values() if r.what == "weight")
    assert load["weights_tier"] == "ddr" and load["ddr_to_hbm_bytes"] == weights > 0
    assert load["ddr_to_hbm_cycles"] > 0
    assert hbm["report"]["load"]["ddr_to_hbm_bytes"] == 0


def test_weights_from_ddr_default_model(default_model, prompt_ids):
    hbm = run(CHIP, default_model, prompt_ids[:2], max_new_tokens=1)
    ddr = run(CHIP, default_model, prompt_ids[:2], max_new_tokens=1, weights_tier="ddr")
    assert ddr["logits_sha"] == hbm["logits_sha"]
    assert ddr["report"]["load"]["ddr_to_hbm_bytes"] > 0


def test_decode_leaves_the_heap_it_found_out_of_collections(small):
    # Objects alive when generate starts are frozen while it runs and thawed after; a caller's own freeze stays.
    import gc

    seen = []
    progress = lambda done, total: seen.append(gc.get_freeze_count())
    assert gc.get_freeze_count() == 0
    run(CHIP, small, [3, 5], max_new_tokens=3, stop_at_eos=False, progress=progress)
    assert seen and min(seen) > 0 and gc.get_freeze_count() == 0
    with pytest.raises(DecodeError):
        run(CHIP, small, [3, 5], max_new_tokens=10_000)
    assert gc.get_freeze_count() == 0
    gc.freeze()
    try:
        held = gc.get_freeze_count()
        run(CHIP, small, [3, 5], max_new_tokens=2, stop_at_eos=False)
        assert gc.get_freeze_count() == held
    finally:
        gc.unfreeze()
