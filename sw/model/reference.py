"""Op-by-op numpy execution of a compiler graph in float32: the functional reference.

It computes what the graph means, the way transformers' Llama (Mistral, Qwen2) does it, so a
compiled program is checked against it and it is checked against
transformers. Weights are used at their stored precision (bf16 values held
exactly in float32).
"""

import numpy as np

from sw.compiler.decode import pad_halves
from sw.model.rope import rope_row


def rope_tables(head_dim, position, rope):
    """cos and sin at ``position`` for ``rope`` (a :class:`sw.compiler.checkpoint.Rope`, or theta)."""
    return rope_row(rope, head_dim, position)


def _rope(x, pos, heads, rope, head_dim=None):
    """rotate ``heads`` heads of ``x``; heads of more than ``head_dim`` values are padded (:func:`pad_halves`)."""
    hd = x.size // heads
    cos, sin = (pad_halves(t, hd) for t in rope_tables(head_dim or hd, int(pos[0]), rope))
    x = x.reshape(heads, hd)
    rotated = np.concatenate([-x[:, hd // 2:], x[:, :hd // 2]], axis=1)
    return (x * cos + rotated * sin).astype(np.float32).reshape(-1)


def _rmsnorm(x, w, eps, size=None):
    """``size``: the true hidden size when ``x`` is zero-padded past it (the mean is over the true values)."""
    variance = np.mean(x.astype(np.float32) ** 2, dtype=np.float32) if size in (None, x.size) else \
        np.float32(np.sum(x.astype(np.float32) ** 2, dtype=np.float32) / np.float32(size))
    return (w * (x / np.sqrt(variance + np.float32(eps)))).astype(np.float32)


def _attention(q, k_cache, v_cache, pos, heads, head_dim=None, window=0):
    """Attention of the query at ``pos`` over keys 0..pos, or the last ``window`` of them (sliding window);
    scores scaled by ``head_dim`` ** -0.5 (the true head size when heads are zero-padded)."""
    kv_heads, _, hd = k_cache.shape
    n = int(pos[0]) + 1
    first = max(0, n - window) if window else 0
    q = q.reshape(heads, hd)
    out = np.empty_like(q)
    for h in range(heads):
        kv = h // (heads // kv_heads)
        scores = (k_cache[kv, first:n] @ q[h]) / np.float32(np.sqrt(head_dim or hd))
        p = np.exp(scores - scores.max())
        out[h] = (p / p.sum()) @ v_cache[kv, first:n]
    return out.reshape(-1).astype(np.float32)


def _kv_write(cache, x, pos):
    cache[:, int(pos[0]), :] = x.reshape(cache.shape[0], cache.shape[2])
    return cache


KERNELS = {
    "embed": lambda table, token: table[int(token[0])].astype(np.float32),
    "rmsnorm": _rmsnorm,
    "matvec": lambda w, x, b=None: (w @ x if b is None else w @ x + b).astype(np.float32),
    "rope": _rope,
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
