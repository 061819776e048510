"""The decode-step graph of a Llama model: one token in, logits out, KV cache updated in place.

This graph is the one description of a decode step: the numpy reference
(:mod:`sw.model.reference`) runs it and the compiler lowers it to chip ops
(:mod:`sw.compiler.lower`). Op names are the names the compiled kernels and
their summaries show (``L0.norm1``, ``L0.q``, ..., ``lm_head``).
"""

from sw.compiler.ir import Graph

LAYER_WEIGHTS = ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


SHORT = {"input_layernorm": "norm1", "post_attention_layernorm": "norm2", "self_attn.q_proj": "q",
         "self_attn.k_proj": "k", "self_attn.v_proj": "v", "self_attn.o_proj": "o", "mlp.gate_proj": "gate",
         "mlp.up_proj": "up", "mlp.down_proj": "down", "embed_tokens": "embed"}


def weight_name(layer, part):
    return f"model.layers.{layer}.{part}.weight"


def short_name(weight):
    """A checkpoint weight's short name, as memory regions show it: ``L0.norm1``, ``embed``, ``norm``."""
    name = weight.removeprefix("model.").removesuffix(".weight")
    if name.startswith("layers."):
        _, layer, part = name.split(".", 2)
        return f"L{layer}.{SHORT.get(part, part)}"
    return SHORT.get(name, name)


def decode_graph(shape, *, context, weight_dtype="bf16", kv_dtype="fp32", weight_tier="hbm"):
    """The decode step of ``shape`` (a :class:`LlamaShape`) with a KV cache of ``context`` positions.

    Weights live in ``weight_tier``, the KV cache in HBM, activations on chip.
    """
    if not 1 <= context <= shape.context_limit:
        raise ValueError(f"context {context} must be in [1, max_position_embeddings = {shape.max_positions}]"
                         if shape.context_limit == shape.max_positions else
                         f"context {context} must be in [1, {shape.context_limit}] (dynamic RoPE factor "
                         f"{shape.rope.factor:g} x max_position_embeddings {shape.max_positions})")
    d, f, hd = shape.hidden_size, shape.intermediate_size, shape.head_dim
    q_dim, kv_dim = shape.num_heads * hd, shape.num_kv_heads * hd
    g = Graph(f"llama-decode-{shape.num_layers}x{d}")
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
        k_cache = g.tensor(f"k_cache.{i}", (shape.num_kv_heads, context, hd), kv_dtype, "hbm", "kv_cache")
        v_cache = g.tensor(f"v_cache.{i}", (shape.num_kv_heads, context, hd), kv_dtype, "hbm", "kv_cache")
        n = lambda s: f"L{i}.{s}"
        op = lambda kind, name, ins, outs, **attrs: g.op(kind, ins, outs, name=n(name), layer=i, **attrs)
        op("rmsnorm", "norm1", [x, w["input_layernorm"]], [act(n("h"), d)], eps=shape.rms_norm_eps)
        op("matvec", "q", [w["self_attn.q_proj"], n("h")], [act(n("q"), q_dim)])
        op("matvec", "k", [w["self_attn.k_proj"], n("h")], [act(n("k"), kv_dim)])
        op("matvec", "v", [w["self_attn.v_proj"], n("h")], [act(n("v"), kv_dim)])
        op("rope", "rope_q", [n("q"), "pos"], [act(n("q_rot"), q_dim)], heads=shape.num_heads, rope=shape.rope)
        op("rope", "rope_k", [n("k"), "pos"], [act(n("k_rot"), kv_dim)], heads=shape.num_kv_heads, rope=shape.rope)
        op("kv_write", "write_k", [k_cache, n("k_rot"), "pos"], [k_cache])
        op("kv_write", "write_v", [v_cache, n("v"), "pos"], [v_cache])
        op("attention", "attention", [n("q_rot"), k_cache, v_cache, "pos"], [act(n("attn"), q_dim)],
           heads=shape.num_heads)
        op("matvec", "o", [w["self_attn.o_proj"], n("attn")], [act(n("o_out"), d)])
        op("add", "add1", [x, n("o_out")], [act(n("x_mid"), d)])
        op("rmsnorm", "norm2", [n("x_mid"), w["post_attention_layernorm"]], [act(n("h2"), d)], eps=shape.rms_norm_eps)
        op("matvec", "gate", [w["mlp.gate_proj"], n("h2")], [act(n("gate"), f)])
        op("matvec", "up", [w["mlp.up_proj"], n("h2")], [act(n("up_out"), f)])
        op("silu_mul", "mul", [n("gate"), n("up_out")], [act(n("act"), f)])
        op("matvec", "down", [w["mlp.down_proj"], n("act")], [act(n("down_out"), d)])
        x = op("add", "add2", [n("x_mid"), n("down_out")], [act(n("x_out"), d)]).outputs[0]
    weight("model.norm.weight", (d,))
    g.op("rmsnorm", [x, "model.norm.weight"], [act("x_final", d)], name="final_norm", eps=shape.rms_norm_eps)
    head = "model.embed_tokens.weight" if shape.tie_word_embeddings else weight("lm_head.weight", (shape.vocab_size, d))
    g.tensor("logits", (shape.vocab_size,), "fp32", "host", "output")
    g.op("matvec", [head, "x_final"], ["logits"], name="lm_head")
    return g.check()
