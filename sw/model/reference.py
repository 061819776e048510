"""Op-by-op numpy execution of a compiler graph in float32: the functional reference.

It computes what the graph means, the way transformers' Llama does it, so a
compiled program is checked against it and it is checked against
transformers. Weights are used at their stored precision (bf16 values held
exactly in float32).
"""

import numpy as np

from sw.model.rope import rope_row


def rope_tables(head_dim, position, rope):
    """cos and sin at ``position`` for ``rope`` (a :class:`sw.compiler.checkpoint.Rope`, or theta)."""
    return rope_row(rope, head_dim, position)


def _rope(x, pos, heads, rope):
    hd = x.size // heads
    cos, sin = rope_tables(hd, int(pos[0]), rope)
    x = x.reshape(heads, hd)
    rotated = np.concatenate([-x[:, hd // 2:], x[:, :hd // 2]], axis=1)
    return (x * cos + rotated * sin).astype(np.float32).reshape(-1)


def _rmsnorm(x, w, eps):
    variance = np.mean(x.astype(np.float32) ** 2, dtype=np.float32)
    return (w * (x / np.sqrt(variance + np.float32(eps)))).astype(np.float32)


def _attention(q, k_cache, v_cache, pos, heads):
    kv_heads, _, hd = k_cache.shape
    n = int(pos[0]) + 1
    q = q.reshape(heads, hd)
    out = np.empty_like(q)
    for h in range(heads):
        kv = h // (heads // kv_heads)
        scores = (k_cache[kv, :n] @ q[h]) / np.float32(np.sqrt(hd))
        p = np.exp(scores - scores.max())
        out[h] = (p / p.sum()) @ v_cache[kv, :n]
    return out.reshape(-1).astype(np.float32)


def _kv_write(cache, x, pos):
    cache[:, int(pos[0]), :] = x.reshape(cache.shape[0], cache.shape[2])
    return cache


KERNELS = {
    "embed": lambda table, token: table[int(token[0])].astype(np.float32),
    "rmsnorm": lambda x, w, eps: _rmsnorm(x, w, eps),
    "matvec": lambda w, x: (w @ x).astype(np.float32),
    "rope": lambda x, pos, heads, rope: _rope(x, pos, heads, rope),
    "kv_write": _kv_write,
    "attention": _attention,
    "add": lambda a, b: (a + b).astype(np.float32),
    "silu_mul": lambda g, u: (g / (1 + np.exp(-g)) * u).astype(np.float32),
    "argmax": lambda x: np.array([int(np.argmax(x))], np.int32),
}


def run_graph(graph, values):
    """Execute ``graph`` on ``values`` (tensor name -> array, updated in place); returns ``values``."""
    for op in graph.ops:
        results = KERNELS[op.kind](*(values[n] for n in op.inputs), **op.attrs)
        results = results if isinstance(results, tuple) else (results,)
        for name, value in zip(op.outputs, results):
            values[name] = value
    return values


def new_kv_cache(graph):
    return {name: np.zeros(t.shape, np.float32) for name, t in graph.tensors.items() if t.role == "kv_cache"}


def decode_logits(graph, weights, tokens):
    """Logits after each of ``tokens`` fed one at a time from position 0 (teacher forcing)."""
    values = {**weights, **new_kv_cache(graph)}
    out = []
    for position, token in enumerate(tokens):
        values["token"] = np.array([token], np.int32)
        values["pos"] = np.array([position], np.int32)
        run_graph(graph, values)
        out.append(values["logits"].copy())
    return np.stack(out)
