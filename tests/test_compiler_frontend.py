import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from sw.compiler.checkpoint import CheckpointError, UnsupportedModelError, load_checkpoint
from sw.compiler.decode import decode_graph
from sw.compiler.ir import GraphError
from sw.compiler.lower import lower
from sw.errors import CompileError
from sw.model.reference import decode_logits
from sw.target import CHIP
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
    (dict(model_type="gemma"), UnsupportedModelError, "model_type = 'gemma' is not supported"),
    (dict(hidden_act="gelu"), UnsupportedModelError, "hidden_act = 'gelu'"),
    (dict(attention_bias=True), CheckpointError, "weight 'model.layers.0.self_attn.q_proj.bias' is missing"),
    (dict(rope_parameters={"rope_type": "longrope", "rope_theta": 1e4}), UnsupportedModelError,
     "rope_parameters.rope_type = 'longrope' is not supported"),
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
    graph.ops[1] = dataclasses.replace(graph.ops[1], inputs=("model.layers.0.self_attn.q_proj.weight", "L0.nothing"))
    with pytest.raises(GraphError, match="reads unknown tensor 'L0.nothing'"):
        graph.check()


def test_lowering_refuses_what_no_template_computes(checkpoint):
    """The graph is lowered op by op; an op or a pattern the chip's rules miss is named, not skipped."""
    ckpt = load_checkpoint(checkpoint)
    graph = decode_graph(ckpt.shape, context=8)
    lowered = lower(graph, CHIP, 8)
    assert [op.kind for op in lowered.ops].count("attention_scores") == ckpt.shape.num_layers
    assert lowered.ops[-2].name == "lm_head" and lowered.ops[-2].writes_home == ("logits",)
    assert lowered.ops[-1].kind == "argmax" and lowered.ops[-1].writes_home == ("token",)
    graph.tensor("next", (1,), "int32", "host", "output")
    graph.op("argmax", ["logits"], ["next"], name="pick")
    with pytest.raises(CompileError, match=r"graph op pick \(argmax\): no chip template computes this op"):
        lower(graph.check(), CHIP, 8)
    graph = decode_graph(ckpt.shape, context=8)
    graph.ops.remove(next(op for op in graph.ops if op.name == "L0.write_k"))
    with pytest.raises(CompileError, match=r"graph op L0.rope_q \(rope\): exactly one of the rotated tensors"):
        lower(graph, CHIP, 8)


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


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from bench.hostile import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt")


@pytest.mark.parametrize("changes, message", [
    (dict(head_dim=8.0), "head_dim = 8.0: expected null (hidden_size / num_attention_heads) or an even integer"),
    (dict(num_key_value_heads=0), "num_key_value_heads = 0: expected null (as many as attention heads) or an integer"),
    (dict(tie_word_embeddings="false"), "tie_word_embeddings = 'false': expected true or false"),
    (dict(rms_norm_eps=1e-40), "rms_norm_eps = 1e-40: expected a finite number from 1e-30 to 1"),
    (dict(rope_parameters={"rope_theta": 0}), "rope_parameters.rope_theta = 0: expected a finite number from 1"),
    (dict(eos_token_id=["a"]), "eos_token_id = ['a']: expected null, a token id"),
    (dict(architectures="LlamaForCausalLM"), "architectures = 'LlamaForCausalLM': expected a list of strings"),
    (dict(num_hidden_layers=1_000_000), "num_hidden_layers = 1000000: expected an integer from 1 to 1024"),
    (dict(bos_token_id=256), "bos_token_id = 256 is outside the vocabulary (vocab_size = 256)"),
    (dict(vocab_size=1 << 21, hidden_size=1 << 16, head_dim=None, num_attention_heads=512, num_key_value_heads=512),
     "do not fit the memory of any target"),
])
def test_config_schema_names_the_field_and_what_was_expected(tiny, tmp_path, changes, message):
    import shutil

    path = Path(shutil.copytree(tiny, tmp_path / "c"))
    _edit_config(path, **changes)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert message in str(info.value) and str(info.value).startswith(str(path / "config.json"))


def test_unset_values_take_their_defaults(tiny):
    from bench.hostile import CONFIG
    from sw.compiler.checkpoint import read_shape

    shape = read_shape({**CONFIG, "num_key_value_heads": None, "head_dim": None, "eos_token_id": [3, 4]})
    assert (shape.num_kv_heads, shape.head_dim, shape.eos_token_id) == (2, 8, 3)


def test_sharded_and_float64_checkpoints_read_the_same_weights(tiny, tmp_path, capsys):
    from bench.hostile import write_checkpoint

    ref = load_checkpoint(tiny)
    sharded = load_checkpoint(write_checkpoint(tmp_path / "sharded", shards=3))
    assert len(list(sharded.path.glob("*.safetensors"))) == 3
    wide = load_checkpoint(write_checkpoint(tmp_path / "wide", dtype="float64"))
    assert f"{tmp_path / 'wide'}: 11 float64 weights converted to float32" in capsys.readouterr().err
    for other in (sharded, wide):
        assert other.shape == ref.shape and sorted(other.weights) == sorted(ref.weights)
        assert all(np.array_equal(other.weights[n], ref.weights[n]) for n in ref.weights)
    assert wide.weight_dtypes["model.norm.weight"] == "float64"          # as stored


def test_a_tensor_in_two_files_names_both(tiny, tmp_path):
    import shutil

    path = Path(shutil.copytree(tiny, tmp_path / "c"))
    shutil.copy(path / "model.safetensors", path / "copy.safetensors")
    with pytest.raises(CheckpointError, match=r"is defined twice: in .*copy\.safetensors and in .*model\.safetensors"):
        load_checkpoint(path)


@pytest.mark.parametrize("make, message", [
    (lambda p: os.mkfifo(p), "a FIFO, not a regular file"),
    (lambda p: p.mkdir(), "a directory, not a regular file"),
    (lambda p: (os.symlink(p.name + "2", p), os.symlink(p.name, p.with_name(p.name + "2"))), "a symlink loop"),
    (lambda p: os.symlink("/dev/null", p), "a character device"),
])
@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_files_must_be_regular(tiny, tmp_path, make, message, name):
    import shutil

    path = Path(shutil.copytree(tiny, tmp_path / "c"))
    (path / name).unlink()
    make(path / name)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


@pytest.mark.parametrize("name, text, message", [
    ("tokenizer.json", "", "tokenizer.json: not valid JSON"),
    ("tokenizer.json", "{}", "not a tokenizer"),
    ("tokenizer.json", '{"model": {"type": "Nonsense"}}', "cannot load the tokenizer"),
    ("tokenizer_config.json", "[1]", "tokenizer_config.json: expected a JSON object"),
])
def test_tokenizer_problems_are_checkpoint_errors(tiny, tmp_path, name, text, message):
    import shutil

    from sw.compiler.checkpoint import load_tokenizer

    path = Path(shutil.copytree(tiny, tmp_path / "c"))
    assert len(load_tokenizer(path)("ab").input_ids) == 2
    (path / name).write_text(text)
    with pytest.raises(CheckpointError, match=message):
        load_tokenizer(path)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    from bench.hostile import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("sharded") / "ckpt", shards=3)


def _edit_index(path, edit):
    index = path / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    index.write_text(edit(data) if callable(edit) else edit)


def _move(data, name, to):
    data["weight_map"][name] = to
    return json.dumps(data)


_SHARD = "model-{:05d}-of-00003.safetensors"
_NORM = "model.norm.weight"


@pytest.mark.parametrize("edit, message", [
    ("{", "not valid JSON"),
    ("[]", "expected a JSON object with \"weight_map\""),
    (lambda d: json.dumps({"metadata": {}}), "missing \"weight_map\""),
    (lambda d: json.dumps({**d, "weight_map": list(d["weight_map"])}), "weight_map = ['"),
    (lambda d: json.dumps({**d, "weight_map": {}}), "weight_map = {}: expected a non-empty object"),
    (lambda d: _move(d, _NORM, 3), f"weight_map['{_NORM}'] = 3 is not the name of a *.safetensors file"),
    (lambda d: json.dumps({**d, "metadata": "x"}), "metadata = 'x': expected an object"),
    (lambda d: json.dumps({**d, "metadata": {"total_size": "1"}}), "metadata.total_size = '1': expected an integer"),
    (lambda d: _move(d, "model.extra.weight", _SHARD.format(1)),
     f"places weight 'model.extra.weight' in {_SHARD.format(1)}, which does not hold it"),
    (lambda d: _move(d, _NORM, _SHARD.format(9)), f"names the shard '{_SHARD.format(9)}', which is not in"),
    (lambda d: _move(d, _NORM, next(_SHARD.format(k) for k in (1, 2, 3) if _SHARD.format(k) != d["weight_map"][_NORM])),
     f"holds weight '{_NORM}', which the index places in"),
    (lambda d: json.dumps({**d, "weight_map": {k: v for k, v in d["weight_map"].items() if k != _NORM}}),
     f"holds weight '{_NORM}', which the index does not name"),
])
def test_sharded_index_refusals_are_one_line(sharded, tmp_path, edit, message):
    """The index is read strictly: every field checked, every shard present, every tensor where it says."""
    import shutil

    path = Path(shutil.copytree(sharded, tmp_path / "c"))
    _edit_index(path, edit)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_missing_shard_is_named(sharded, tmp_path):
    import shutil

    path = Path(shutil.copytree(sharded, tmp_path / "c"))
    (path / _SHARD.format(2)).unlink()
    with pytest.raises(CheckpointError, match=f"names the shard '{_SHARD.format(2)}', which is not in {path}$"):
        load_checkpoint(path)


def test_a_tensor_in_two_shards_is_refused(sharded, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    path = Path(shutil.copytree(sharded, tmp_path / "c"))
    home = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"][_NORM]
    other = next(_SHARD.format(k) for k in (1, 2, 3) if _SHARD.format(k) != home)
    tensors = load_file(path / other)
    tensors[_NORM] = load_file(path / home)[_NORM]
    save_file(tensors, path / other, metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value) == f"{path / other}: holds weight '{_NORM}', which the index places in '{home}'"


def test_files_the_index_does_not_name_are_ignored_with_a_warning(sharded, tiny, tmp_path, capsys):
    import shutil

    path = Path(shutil.copytree(sharded, tmp_path / "c"))
    shutil.copy(tiny / "model.safetensors", path / "model.safetensors")           # a stale unsharded save
    (path / "junk.safetensors").write_bytes(b"not read")
    ckpt = load_checkpoint(path)
    assert (f"openrdu: warning: {path}: ignoring 2 *.safetensors files the index does not name: "
            f"'junk.safetensors', 'model.safetensors'") in capsys.readouterr().err
    ref = load_checkpoint(sharded)
    assert all(np.array_equal(ckpt.weights[n], ref.weights[n]) for n in ref.weights)


def test_weights_are_read_when_asked_for(tiny, tmp_path):
    """load_checkpoint checks every tensor but keeps none: a weight changed on disk afterwards is read as it is
    now, and the mapping reads a tensor per lookup."""
    import shutil

    from safetensors.torch import load_file, save_file

    path = Path(shutil.copytree(tiny, tmp_path / "c"))
    ckpt = load_checkpoint(path)
    before = ckpt.weights[_NORM]
    tensors = load_file(path / "model.safetensors")
    tensors[_NORM] = tensors[_NORM] * 2
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    assert np.array_equal(ckpt.weights[_NORM], 2 * before) and ckpt.weights[_NORM] is not ckpt.weights[_NORM]
    assert _NORM in ckpt.weights and "nothing" not in ckpt.weights and len(ckpt.weights) == len(dict(ckpt.weights))
