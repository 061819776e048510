"""Llama-family variants: ``attention_bias`` / ``mlp_bias``, ``model_type`` mistral (sliding window) and qwen2.

Tiny random checkpoints written by transformers' ``save_pretrained`` in its own class for each model
type are compiled for the chip and decoded on the fast model: greedy tokens equal ``generate``'s for 16
tokens and every step's logits match transformers' float32 forward within the Llama tests' tolerance.
A sliding window shorter than the 20 decoded positions is honoured (its mask hides the older keys).
"""

import asyncio
import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sw.compiler.checkpoint import CheckpointError, UnsupportedModelError, load_checkpoint  # noqa: E402
from sw.compiler.compile import compile_model  # noqa: E402
from sw.compiler.decode import decode_graph  # noqa: E402
from sw.model.reference import decode_logits  # noqa: E402
from sw.runtime.decode import generate  # noqa: E402
from sw.runtime.device import ModelDevice  # noqa: E402
from sw.target import CHIP  # noqa: E402
from tests.llama_checkpoints import load_model, make_checkpoint, transformers_greedy, transformers_logits  # noqa: E402

RTOL = 1e-4                         # as tests/test_decode_model.py: of the largest |logit|
NEW_TOKENS = 16
PROMPT = [5, 17, 42, 8]
CONTEXT = 32
SHAPE = dict(hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=64, tie_word_embeddings=True, eos_token_id=None, bos_token_id=None, pad_token_id=None)

VARIANTS = {
    "llama-biases": dict(model_type="llama", attention_bias=True, mlp_bias=True),
    "mistral-window": dict(model_type="mistral", sliding_window=8, tie_word_embeddings=False),
    # Layer 0 attends to everything, layer 1 over a window of 6 (max_window_layers = 1).
    "qwen2-window": dict(model_type="qwen2", use_sliding_window=True, sliding_window=6, max_window_layers=1),
}
BIASES = {"llama-biases": 7, "mistral-window": 0, "qwen2-window": 3}          # biased projections per layer
WINDOWS = {"llama-biases": (), "mistral-window": (8, 8), "qwen2-window": (0, 6)}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def decoded(request, tmp_path_factory):
    path = make_checkpoint(tmp_path_factory.mktemp(request.param), **{**SHAPE, **VARIANTS[request.param]})
    compiled = compile_model(path, CHIP, context=CONTEXT)
    result = asyncio.run(generate(ModelDevice(CHIP), compiled, PROMPT, max_new_tokens=NEW_TOKENS,
                                  stop_at_eos=False, keep_logits=True))
    return request.param, path, compiled, result


def test_shape_follows_the_model_type(decoded):
    name, path, compiled, result = decoded
    shape = compiled.shape
    assert shape.model_type == VARIANTS[name]["model_type"]
    assert len(shape.biases) == BIASES[name] and shape.windows == WINDOWS[name]
    assert type(load_model(path)).__name__ == {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                                               "qwen2": "Qwen2ForCausalLM"}[shape.model_type]


def test_greedy_tokens_equal_generate(decoded):
    name, path, compiled, result = decoded
    assert result["tokens"] == transformers_greedy(path, PROMPT, NEW_TOKENS)


def test_teacher_forced_logits(decoded):
    name, path, compiled, result = decoded
    fed = PROMPT + result["tokens"][:-1]
    theirs = transformers_logits(path, fed)
    scale = float(np.abs(theirs).max())
    for ours in (result["logits"], decode_logits(decode_graph(compiled.shape, context=CONTEXT),
                                                 load_checkpoint(path).weights, fed)):
        err = float(np.abs(ours - theirs).max())
        assert err <= RTOL * scale, f"{name}: max |error| {err:.3g} > {RTOL:g} x max |logit| {scale:.3g}"
    if compiled.shape.windows:
        # The window matters here: full attention gives other logits.
        full = decode_logits(decode_graph(type(compiled.shape)(**{**vars(compiled.shape), "windows": ()}),
                                          context=CONTEXT), load_checkpoint(path).weights, fed)
        assert np.abs(full - theirs).max() > 100 * RTOL * scale


def test_bias_adds_a_pcu_and_a_stream(decoded):
    name, path, compiled, result = decoded
    gemvs = [op for launch in compiled.buckets[CONTEXT] for op in launch.ops if op.kind == "gemv"]
    assert sum("bias" in op.attrs for op in gemvs) == (compiled.shape.num_layers * {7: 6, 3: 2, 0: 0}[BIASES[name]])
    regions = compiled.memory_map.regions
    assert all(regions[op.attrs["bias"]].nbytes == 4 * op.attrs["n"] for op in gemvs if "bias" in op.attrs)
    masks = {op.attrs["mask"] for launch in compiled.buckets[CONTEXT] for op in launch.ops
             if op.kind == "attention_scores"}
    assert masks == {f"mask.w{w}" if w else "mask" for w in WINDOWS[name] or (0,)}


def test_summary_and_program_file_keep_the_variant(decoded, tmp_path):
    from sw.compiler.program import load, save

    name, path, compiled, result = decoded
    variant = {"llama-biases": "llama: biases on q, k, v, o, gate, up, down",
               "mistral-window": "mistral: sliding window of 8 positions in layers 0, 1",
               "qwen2-window": "qwen2: biases on q, k, v; sliding window of 6 positions in layer 1"}[name]
    assert variant in compiled.summary().splitlines()
    save(compiled, tmp_path / "model.rdu")
    back = load(tmp_path / "model.rdu")
    assert back.shape == compiled.shape and back.summary() == compiled.summary()


def _write_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, **changes}))


@pytest.fixture(scope="module")
def qwen2_folder(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("qwen2"), **{**SHAPE, "model_type": "qwen2"})


@pytest.mark.parametrize("changes, error, message", [
    (dict(model_type="gemma"), UnsupportedModelError,
     "model_type = 'gemma' is not supported (supported: 'llama', 'mistral', 'qwen2')"),
    (dict(architectures=["LlamaForCausalLM"]), UnsupportedModelError,
     "architectures = 'LlamaForCausalLM' is not supported (supported: 'Qwen2ForCausalLM' for model_type 'qwen2')"),
    (dict(layer_types=["full_attention"]), CheckpointError, "layer_types = ['full_attention']: expected 2 entries"),
    (dict(sliding_window=0, use_sliding_window=True), CheckpointError, "sliding_window = 0: expected null or an"),
    (dict(hidden_act="gelu"), UnsupportedModelError, "hidden_act = 'gelu'"),
])
def test_refusals_name_the_setting(qwen2_folder, tmp_path, changes, error, message):
    path = shutil.copytree(qwen2_folder, tmp_path / "c")
    _write_config(path, **changes)
    with pytest.raises(error) as info:
        load_checkpoint(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_qwen2_defaults_as_transformers(qwen2_folder, tmp_path):
    """No sliding_window key: 4096; no layer_types: sliding from max_window_layers (28) on; off unless used."""
    from sw.compiler.checkpoint import read_shape

    config = json.loads((qwen2_folder / "config.json").read_text())
    for key in ("sliding_window", "layer_types", "max_window_layers", "use_sliding_window"):
        config.pop(key, None)
    assert read_shape(config).windows == ()
    many = {**config, "num_hidden_layers": 30, "use_sliding_window": True}
    ours = read_shape(many).windows
    theirs = transformers.Qwen2Config(**many)
    assert ours == tuple(theirs.sliding_window if t == "sliding_attention" else 0 for t in theirs.layer_types)
    assert ours[27:] == (0, 4096, 4096)
    assert read_shape({**config, "model_type": "mistral", "architectures": None}).windows == (4096, 4096)


def test_llama_bias_weights_are_required(tmp_path):
    path = make_checkpoint(tmp_path / "m", **SHAPE)
    _write_config(path, mlp_bias=True)
    with pytest.raises(CheckpointError, match=r"weight 'model.layers.0.mlp.gate_proj.bias' is missing"):
        load_checkpoint(path)
