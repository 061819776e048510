"""The committed default model, models/pystdlib-tiny (made by tools/train_default_model.py).

Fast checks: it loads with transformers, has the shape of spec section 13.6 with
bfloat16 weights, its tokenizer round-trips Python, and it has learned Python:
greedy output looks like code and its loss on an unseen snippet is far below
chance (log 512), where a freshly initialised model of the same shape sits.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "pystdlib-tiny"

# Written for this test in the style of the standard library; not part of the
# training corpus (which is stdlib files).
SNIPPET = '''\
import os
import sys


def read_lines(path, encoding="utf-8"):
    """Return the lines of the file at *path* without trailing newlines."""
    with open(path, encoding=encoding) as f:
        return [line.rstrip("\\n") for line in f]


class Counter:
    """Count how often each key has been seen."""

    def __init__(self):
        self._counts = {}

    def add(self, key, n=1):
        if not isinstance(n, int):
            raise TypeError("n must be an integer")
        self._counts[key] = self._counts.get(key, 0) + n
        return self._counts[key]
'''

CHANCE = math.log(512)  # 6.24 nats/token: a uniform guess over the vocabulary
MAX_TRAINED_LOSS = 3.0  # the trained model scores 1.47 on this snippet; untrained 6.25


@pytest.fixture(scope="module")
def tok():
    return transformers.AutoTokenizer.from_pretrained(MODEL_DIR)


@pytest.fixture(scope="module")
def model():
    m = transformers.AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.bfloat16)
    m.eval()
    return m


def snippet_loss(model, tok) -> float:
    ids = tok(SNIPPET, return_tensors="pt").input_ids
    assert ids.shape[1] <= model.config.max_position_embeddings
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    return torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:]).item()


def test_files_present_and_small():
    for name in ("config.json", "generation_config.json", "model.safetensors",
                 "tokenizer.json", "tokenizer_config.json", "manifest.json", "README.md"):
        assert (MODEL_DIR / name).is_file(), name
    total = sum(p.stat().st_size for p in MODEL_DIR.iterdir() if p.is_file())
    assert total < 4 * 2**20, total


def test_shape_and_bf16_weights(model):
    cfg = model.config
    assert cfg.model_type == "llama" and type(model).__name__ == "LlamaForCausalLM"
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (128, 4, 4)
    assert cfg.hidden_size // cfg.num_attention_heads == 32 and getattr(cfg, "head_dim", 32) == 32
    assert (cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size) == (256, 4, 512)
    assert cfg.max_position_embeddings == 256 and cfg.hidden_act == "silu"
    assert cfg.tie_word_embeddings and cfg.rms_norm_eps == 1e-5
    theta = getattr(cfg, "rope_theta", None) or cfg.rope_parameters["rope_theta"]
    assert theta == 10000.0
    assert (cfg.bos_token_id, cfg.eos_token_id) == (0, 1)
    assert model.lm_head.weight is model.model.embed_tokens.weight

    stored = safetensors_torch.load_file(MODEL_DIR / "model.safetensors")
    assert stored and all(t.dtype == torch.bfloat16 for t in stored.values())
    assert "lm_head.weight" not in stored  # tied: stored once
    assert stored["model.embed_tokens.weight"].shape == (512, 128)
    for i in range(4):
        p = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            assert stored[p + f"self_attn.{name}.weight"].shape == (128, 128)
        assert stored[p + "mlp.gate_proj.weight"].shape == (256, 128)
        assert stored[p + "mlp.up_proj.weight"].shape == (256, 128)
        assert stored[p + "mlp.down_proj.weight"].shape == (128, 256)
    n = sum(t.numel() for t in stored.values())
    assert n == 722_048 == sum(p.numel() for p in model.parameters())

    manifest = json.loads((MODEL_DIR / "manifest.json").read_text())
    assert manifest["parameters"] == n
    assert manifest["results"]["val_loss_bf16"] < MAX_TRAINED_LOSS
    assert len(manifest["corpus"]["files"]) > 100


def test_tokenizer_round_trip(tok, model):
    assert tok.is_fast and len(tok) == 512
    assert (tok.bos_token, tok.eos_token) == ("<s>", "</s>")
    assert (tok.bos_token_id, tok.eos_token_id) == (model.config.bos_token_id, model.config.eos_token_id)
    line = '\tresult = {k: v for k, v in d.items() if k != "é"}  # ünïcode, tabs\n'
    ids = tok(line).input_ids
    assert ids[0] == tok.bos_token_id  # Llama-style: <s> is prepended
    assert tok.decode(ids, skip_special_tokens=True) == line
    assert tok.decode(tok(SNIPPET).input_ids[1:]) == SNIPPET
    # BPE learned merges for common Python: far fewer tokens than bytes.
    assert len(tok(SNIPPET).input_ids) < 0.6 * len(SNIPPET.encode())


def greedy(model, tok, prompt: str, n: int = 32) -> str:
    enc = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=n, do_sample=False)
    return tok.decode(out[0, enc.input_ids.shape[1]:], skip_special_tokens=True)


def looks_like_python(text: str) -> bool:
    """Whole characters, Python syntax and keywords, several distinct identifiers."""
    if "\ufffd" in text:  # a broken UTF-8 sequence: byte junk
        return False
    markers = {"def", "return", "self", "import", "class", "if", "for", "(", ")", ":", "=", ".", "\n"}
    words = [w for w in "".join(c if c.isalnum() or c == "_" else " " for c in text).split() if len(w) >= 2]
    return sum(m in text for m in markers) >= 3 and len(set(words)) >= 3


# Prompts as they occur in the corpus: at the start of a file, after "class Name(",
# and inside a class body.
@pytest.mark.parametrize("prompt", ["import os\n", "class Foo(", "    def __init__(self"])
def test_greedy_generation_looks_like_python(tok, model, prompt):
    text = greedy(model, tok, prompt)
    assert looks_like_python(text), (prompt, text)


def test_generation_check_rejects_untrained_model(tok, model):
    torch.manual_seed(0)
    fresh = transformers.LlamaForCausalLM(model.config).to(torch.bfloat16).eval()
    text = greedy(fresh, tok, "import os\n")
    assert not looks_like_python(text), text


def test_loss_far_below_chance(tok, model):
    loss = snippet_loss(model, tok)
    assert loss < MAX_TRAINED_LOSS < 0.5 * CHANCE, loss
    # The bound is one an untrained model of the same shape cannot meet.
    torch.manual_seed(0)
    fresh = transformers.LlamaForCausalLM(model.config).to(torch.bfloat16).eval()
    assert snippet_loss(fresh, tok) > CHANCE - 0.5
