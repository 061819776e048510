"""The decode-step graph of a Llama model: one token in, logits out, KV cache updated in place.

This graph is the one description of a decode step: the numpy reference
(:mod:`sw.model.reference`) runs it and the compiler lowers it to chip ops
(:mod:`sw.compiler.lower`). Op names are the names the compiled kernels and
their summaries show (``L0.norm1``, ``L0.q``, ..., ``lm_head``).
"""

from dataclasses import dataclass

import numpy as np

from sw.compiler.ir import Graph

LAYER_WEIGHTS = ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


SHORT = {"input_layernorm": "norm1", "post_attention_layernorm": "norm2", "self_attn.q_proj": "q",
         "self_attn.k_proj": "k", "self_attn.v_proj": "v", "self_attn.o_proj": "o", "mlp.gate_proj": "gate",
         "mlp.up_proj": "up", "mlp.down_proj": "down", "embed_tokens": "embed"}


def weight_name(layer, part, kind="weight"):
    return f"model.layers.{layer}.{part}.{kind}"


def short_name(weight):
    """A checkpoint weight's short name, as memory regions show it: ``L0.norm1``, ``embed``, ``norm``."""
    name = weight.removeprefix("model.").removesuffix(".weight")
    bias = name.endswith(".bias")
    name = name.removesuffix(".bias")
    if name.startswith("layers."):
        _, layer, part = name.split(".", 2)
        return f"L{layer}.{SHORT.get(part, part)}" + ("_bias" if bias else "")
    return SHORT.get(name, name)


@dataclass(frozen=True)
class Padding:
    """The sizes a decode step is computed at: each of the shape's, or rounded up for the array.

    Padded values are zeros: the embedding rows, norm gains, weights and biases are zero there, so
    padded hidden and intermediate lanes stay exactly 0 (RMSNorm divides by the true hidden size),
    padded weight columns add exact zeros to every sum, and each head's halves are padded separately
    (``head_index``) so RoPE's rotate_half still pairs the true values. ``vocab``: the lm_head's
    outputs, in whole tiles; only the true logits are read back.
    """

    hidden: int
    intermediate: int
    head_dim: int
    vocab: int

    @classmethod
    def of(cls, shape, lanes=1):
        """``shape``'s sizes rounded up to what an array of ``lanes`` lanes takes: vectors of ``lanes``
        words, half-heads of whole vectors (RoPE swaps half-heads at vector granularity)."""
        up = lambda n, m: -(-n // m) * m
        return cls(up(shape.hidden_size, lanes), up(shape.intermediate_size, lanes),
                   up(shape.head_dim, 2 * lanes), up(shape.vocab_size, lanes))

    def padded(self, shape):
        """The sizes ``(name, true, padded)`` that this padding changes."""
        return [(name, true, pad) for name, true, pad in (
            ("hidden", shape.hidden_size, self.hidden), ("intermediate", shape.intermediate_size, self.intermediate),
            ("head_dim", shape.head_dim, self.head_dim), ("vocab", shape.vocab_size, self.vocab)) if pad != true]


def head_index(heads, head_dim, padded):
    """Where each of ``heads`` x ``head_dim`` values goes in heads of ``padded``: each half-head at the
    start of its padded half, so swapping the padded halves swaps the true halves."""
    i = np.arange(head_dim)
    return (np.arange(heads)[:, None] * padded + (i // (head_dim // 2)) * (padded // 2) + i % (head_dim // 2)).ravel()


def pad_halves(table, padded):
    """A (..., head_dim) RoPE table laid out in heads of ``padded`` (:func:`head_index`), zeros between."""
    out = np.zeros(table.shape[:-1] + (padded,), table.dtype)
    out[..., head_index(1, table.shape[-1], padded)] = table
    return out


def pad_weights(shape, padding, weights):
    """``weights`` (name -> array) at ``padding``'s sizes, zero-filled; ``weights`` itself when nothing pads."""
    d, f, hd = shape.hidden_size, shape.intermediate_size, shape.head_dim
    if (padding.hidden, padding.intermediate, padding.head_dim) == (d, f, hd):
        return weights
    hidden, inter = (np.arange(d), padding.hidden), (np.arange(f), padding.intermediate)
    heads = lambda n: (head_index(n, hd, padding.head_dim), n * padding.head_dim)
    q, kv = heads(shape.num_heads), heads(shape.num_kv_heads)
    dims = {"input_layernorm": (hidden,), "post_attention_layernorm": (hidden,), "self_attn.q_proj": (q, hidden),
            "self_attn.k_proj": (kv, hidden), "self_attn.v_proj": (kv, hidden), "self_attn.o_proj": (hidden, q),
            "mlp.gate_proj": (inter, hidden), "mlp.up_proj": (inter, hidden), "mlp.down_proj": (hidden, inter),
            "embed_tokens": ((np.arange(shape.vocab_size), shape.vocab_size), hidden),
            "lm_head": ((np.arange(shape.vocab_size), shape.vocab_size), hidden), "norm": (hidden,)}
    out = {}
    for name, w in weights.items():
        part = name.removeprefix("model.").rsplit(".", 1)[0]
        part = part.split(".", 2)[2] if part.startswith("layers.") else part
        spec = dims[part][:w.ndim]
        padded = np.zeros(tuple(n for _, n in spec), np.float32)
        padded[np.ix_(*(index for index, _ in spec))] = w
        out[name] = padded
    return out


def decode_graph(shape, *, context, padding=None, weight_dtype="bf16", kv_dtype="fp32", weight_tier="hbm"):
    """The decode step of ``shape`` (a :class:`LlamaShape`) with a KV cache of ``context`` positions.

    ``padding`` (a :class:`Padding`): compute at its sizes, on weights padded by :func:`pad_weights`;
    the ops that must see the true sizes carry them (``size`` for RMSNorm's mean, ``head_dim`` for
    RoPE's tables and attention's scale), and the logits are the true vocabulary's.

    Weights live in ``weight_tier``, the KV cache in HBM, activations on chip. A projection in
    ``shape.biases`` is a matvec with its bias as a third input; a layer with a sliding window
    (``shape.window``) attends with ``window`` set.
    """
    if not 1 <= context <= shape.context_limit:
        raise ValueError(f"context {context} must be in [1, max_position_embeddings = {shape.max_positions}]"
                         if shape.context_limit == shape.max_positions else
                         f"context {context} must be in [1, {shape.context_limit}] (dynamic RoPE factor "
                         f"{shape.rope.factor:g} x max_position_embeddings {shape.max_positions})")
    padding = padding or Padding.of(shape)
    d, f, hd = padding.hidden, padding.intermediate, padding.head_dim
    q_dim, kv_dim = shape.num_heads * hd, shape.num_kv_heads * hd
    norm = dict(eps=shape.rms_norm_eps, size=shape.hidden_size)
    g = Graph(f"llama-decode-{shape.num_layers}x{shape.hidden_size}")
    act = lambda name, size: g.tensor(name, (size,), "fp32", "sram", "activation")
    weight = lambda name, dims: g.tensor(name, dims, weight_dtype, weight_tier, "weight")

    g.tensor("token", (1,), "int32", "host", "input")
    g.tensor("pos", (1,), "int32", "host", "input")
    weight("model.embed_tokens.weight", (shape.vocab_size, d))
    x = g.op("embed", ["model.embed_tokens.weight", "token"], [act("x0", d)], name="embed").outputs[0]
    for i in range(shape.num_layers):
        w = {part: weight_name(i, part) for part in LAYER_WEIGHTS}
        for part, dims in zip(LAYER_WEIGHTS, [(d,), (q_dim, d), (kv_dim, d), (kv_dim, d), (d, q_dim), (d,),
                                              (f, d), (f, d), (d, f)]):
            weight(w[part], dims)
            if part in shape.biases:
                weight(weight_name(i, part, "bias"), dims[:1])
        b = lambda part: [weight_name(i, part, "bias")] if part in shape.biases else []
        window = dict(window=shape.window(i)) if shape.window(i) else {}
        k_cache = g.tensor(f"k_cache.{i}", (shape.num_kv_heads, context, hd), kv_dtype, "hbm", "kv_cache")
        v_cache = g.tensor(f"v_cache.{i}", (shape.num_kv_heads, context, hd), kv_dtype, "hbm", "kv_cache")
        n = lambda s: f"L{i}.{s}"
        op = lambda kind, name, ins, outs, **attrs: g.op(kind, ins, outs, name=n(name), layer=i, **attrs)
        op("rmsnorm", "norm1", [x, w["input_layernorm"]], [act(n("h"), d)], **norm)
        for part, name, size in (("self_attn.q_proj", "q", q_dim), ("self_attn.k_proj", "k", kv_dim),
                                 ("self_attn.v_proj", "v", kv_dim)):
            op("matvec", name, [w[part], n("h")] + b(part), [act(n(name), size)])
        op("rope", "rope_q", [n("q"), "pos"], [act(n("q_rot"), q_dim)], heads=shape.num_heads, rope=shape.rope,
           head_dim=shape.head_dim)
        op("rope", "rope_k", [n("k"), "pos"], [act(n("k_rot"), kv_dim)], heads=shape.num_kv_heads, rope=shape.rope,
           head_dim=shape.head_dim)
        op("kv_write", "write_k", [k_cache, n("k_rot"), "pos"], [k_cache])
        op("kv_write", "write_v", [v_cache, n("v"), "pos"], [v_cache])
        op("attention", "attention", [n("q_rot"), k_cache, v_cache, "pos"], [act(n("attn"), q_dim)],
           heads=shape.num_heads, head_dim=shape.head_dim, **window)
        op("matvec", "o", [w["self_attn.o_proj"], n("attn")] + b("self_attn.o_proj"), [act(n("o_out"), d)])
        op("add", "add1", [x, n("o_out")], [act(n("x_mid"), d)])
        op("rmsnorm", "norm2", [n("x_mid"), w["post_attention_layernorm"]], [act(n("h2"), d)], **norm)
        op("matvec", "gate", [w["mlp.gate_proj"], n("h2")] + b("mlp.gate_proj"), [act(n("gate"), f)])
        op("matvec", "up", [w["mlp.up_proj"], n("h2")] + b("mlp.up_proj"), [act(n("up_out"), f)])
        op("silu_mul", "mul", [n("gate"), n("up_out")], [act(n("act"), f)])
        op("matvec", "down", [w["mlp.down_proj"], n("act")] + b("mlp.down_proj"), [act(n("down_out"), d)])
        x = op("add", "add2", [n("x_mid"), n("down_out")], [act(n("x_out"), d)]).outputs[0]
    weight("model.norm.weight", (d,))
    g.op("rmsnorm", [x, "model.norm.weight"], [act("x_final", d)], name="final_norm", **norm)
    head = "model.embed_tokens.weight" if shape.tie_word_embeddings else weight("lm_head.weight", (shape.vocab_size, d))
    g.tensor("logits", (shape.vocab_size,), "fp32", "host", "output")
    g.op("matvec", [head, "x_final"], ["logits"], name="lm_head")
    return g.check()
