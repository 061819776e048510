import json

import numpy as np
import pytest

from sw.compiler.checkpoint import CheckpointError, UnsupportedModelError, load_checkpoint
from sw.compiler.decode import decode_graph
from sw.compiler.ir import GraphError
from sw.model.reference import decode_logits
from tests.llama_checkpoints import SHAPES, make_checkpoint, transformers_logits


@pytest.fixture(scope="module", params=sorted(SHAPES))
def checkpoint(request, tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp(request.param), **SHAPES[request.param])


def test_reference_decode_matches_transformers(checkpoint):
    """fp32 arithmetic on the same bf16 weights: only summation order differs, so 1e-4 relative to the logit range."""
    ckpt = load_checkpoint(checkpoint)
    graph = decode_graph(ckpt.shape, context=16)
    tokens = list(np.random.default_rng(1).integers(0, ckpt.shape.vocab_size, 12))
    ours = decode_logits(graph, ckpt.weights, tokens)
    theirs = transformers_logits(checkpoint, tokens)
    scale = np.abs(theirs).max()
    assert np.abs(ours - theirs).max() <= 1e-4 * scale
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()


def test_graph_prints_and_accounts_bytes(checkpoint):
    ckpt = load_checkpoint(checkpoint)
    graph = decode_graph(ckpt.shape, context=16)
    text = str(graph)
    assert text.startswith("graph llama-decode") and "attention(" in text and "kv_write(" in text
    assert graph.bytes_by_tier("weight")["hbm"] == 2 * ckpt.shape.params()
    assert ckpt.weight_dtypes["model.norm.weight"] == "bfloat16"


def _edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("changes, error, message", [
    (dict(model_type="mistral"), UnsupportedModelError, "model_type = 'mistral' is not supported"),
    (dict(hidden_act="gelu"), UnsupportedModelError, "hidden_act = 'gelu'"),
    (dict(attention_bias=True), UnsupportedModelError, "attention_bias = True"),
    (dict(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4}), UnsupportedModelError, "rope type = 'yarn'"),
    (dict(num_key_value_heads=3), CheckpointError, "num_key_value_heads = 3 must divide"),
    (dict(intermediate_size=100), CheckpointError, "'model.layers.0.mlp.gate_proj.weight' has shape"),
])
def test_bad_checkpoints_are_named(tmp_path, changes, error, message):
    path = make_checkpoint(tmp_path, **SHAPES["tiny-tied"])
    _edit_config(path, **changes)
    with pytest.raises(error, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_checkpoint(path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        load_checkpoint(tmp_path / "nope")
    path = make_checkpoint(tmp_path / "m", **SHAPES["tiny-tied"])
    (path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(CheckpointError, match="cannot read the weights"):
        load_checkpoint(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)


def test_context_and_graph_checks(checkpoint):
    ckpt = load_checkpoint(checkpoint)
    with pytest.raises(ValueError, match="context 65 must be in"):
        decode_graph(ckpt.shape, context=65)
    graph = decode_graph(ckpt.shape, context=8)
    graph.ops[1].inputs = ("model.layers.0.self_attn.q_proj.weight", "L0.nothing")
    with pytest.raises(GraphError, match="reads unknown tensor 'L0.nothing'"):
        graph.check()


def test_default_model_reads_and_decodes_like_transformers():
    """The committed default model goes through the frontend and the reference decode matches transformers."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "models" / "pystdlib-tiny"
    ckpt = load_checkpoint(path)
    assert ckpt.has_tokenizer and ckpt.shape.hidden_size == 128 and ckpt.shape.num_layers == 4
    graph = decode_graph(ckpt.shape, context=32)
    tokens = [0, 475, 296, 30, 10, 10, 87, 101, 102]
    ours = decode_logits(graph, ckpt.weights, tokens)
    theirs = transformers_logits(path, tokens)
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max()
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()
