"""Rotary position tables as transformers computes them, in numpy float32.

The formulas are those of ``transformers.modeling_rope_utils`` (default,
``linear``, ``dynamic``, ``llama3``, ``yarn``) and of
``LlamaRotaryEmbedding.forward``: ``angles = position * inv_freq``,
``cos = cos(angles) * attention_factor``, ``sin = sin(angles) *
attention_factor``. ``rope`` is a :class:`sw.compiler.checkpoint.Rope` (the
settings read from config.json), or a bare ``theta`` for the default type.

Dynamic NTK is the one type whose frequencies depend on the sequence:
transformers recomputes ``inv_freq`` for ``seq_len = max(position) + 1``
when a forward pass reaches past ``max_position_embeddings``. A decode step
at position ``p`` (one token, its KV cache holding the earlier keys as they
were rotated) therefore rotates q and k with the frequencies of
``seq_len = max(p + 1, max_position_embeddings)``; row ``p`` of the tables
is exactly that. Keys written earlier keep their rotation, as in
transformers' cache.
"""

import math

import numpy as np


def _pow32(base, exponent):
    """``base ** exponent`` of float32 operands as float32: the float64 power, rounded once to float32.

    That is the correctly rounded float32 power except where the float64 result falls within its own rounding
    error of a float32 halfway point (not met in tests/test_rope.py's checks), so the tables no longer depend on
    the CPU as numpy's own float32 power does: on CPUs with AVX-512 it takes a SIMD path that is off by an ulp or
    two. torch's float32 power is within an ulp too; for the usual theta and head sizes the two agree.
    """
    wide = np.asarray(base, np.float32).astype(np.float64) ** np.asarray(exponent, np.float32).astype(np.float64)
    return wide.astype(np.float32)


def _default_inv_freq(theta, dim):
    return (1.0 / _pow32(theta, np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim)).astype(np.float32)


def _llama3(rope, dim):
    inv_freq = _default_inv_freq(rope.theta, dim)
    old = rope.original_max_positions
    low_wavelen, high_wavelen = old / rope.low_freq_factor, old / rope.high_freq_factor
    wavelen = (np.float32(2 * math.pi) / inv_freq).astype(np.float32)
    scaled = np.where(wavelen > low_wavelen, inv_freq / np.float32(rope.factor), inv_freq).astype(np.float32)
    smooth = ((old / wavelen - np.float32(rope.low_freq_factor))
              / np.float32(rope.high_freq_factor - rope.low_freq_factor)).astype(np.float32)
    smoothed = ((1 - smooth) * scaled / np.float32(rope.factor) + smooth * scaled).astype(np.float32)
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def _yarn(rope, dim):
    base, factor = rope.theta, rope.factor

    def correction_dim(rotations):
        return dim * math.log(rope.original_max_positions / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(rope.beta_fast), correction_dim(rope.beta_slow)
    if rope.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001                                   # as transformers: no division by zero
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - np.float32(low)) / np.float32(high - low), 0, 1)
    extrapolation = (1 - ramp).astype(np.float32)
    pos_freqs = _pow32(base, np.arange(0, dim, 2).astype(np.float32) / np.float32(dim))
    inv_extra = (1.0 / pos_freqs).astype(np.float32)
    inv_inter = (1.0 / (np.float32(factor) * pos_freqs)).astype(np.float32)
    return (inv_inter * (1 - extrapolation) + inv_extra * extrapolation).astype(np.float32)


def _dynamic(rope, dim, seq_len):
    if seq_len <= rope.max_positions:
        return _default_inv_freq(rope.theta, dim)
    # transformers computes the stretched base from a tensor seq_len in a decode step: float32 throughout.
    seq_len = np.float32(max(seq_len, rope.max_positions))
    factor = np.float32(rope.factor)
    stretch = (factor * seq_len / np.float32(rope.max_positions) - (factor - np.float32(1))).astype(np.float32)
    base = (np.float32(rope.theta) * _pow32(stretch, np.float32(dim / (dim - 2)))).astype(np.float32)
    return (1.0 / _pow32(base, np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim))
            ).astype(np.float32)


def inv_freq(rope, head_dim, seq_len=None):
    """The ``head_dim // 2`` inverse frequencies (float32) for a sequence of ``seq_len`` positions.

    ``seq_len`` matters for ``dynamic`` only (None: ``max_position_embeddings``, transformers' initial value).
    """
    if not hasattr(rope, "rope_type") or rope.rope_type == "default":
        return _default_inv_freq(getattr(rope, "theta", rope), head_dim)
    if rope.rope_type == "linear":
        return (_default_inv_freq(rope.theta, head_dim) / np.float32(rope.factor)).astype(np.float32)
    if rope.rope_type == "dynamic":
        return _dynamic(rope, head_dim, rope.max_positions if seq_len is None else seq_len)
    if rope.rope_type == "llama3":
        return _llama3(rope, head_dim)
    if rope.rope_type == "yarn":
        return _yarn(rope, head_dim)
    raise ValueError(f"rope type {rope.rope_type!r} has no tables")


def attention_factor(rope):
    """What transformers multiplies cos and sin by (yarn's mscale; 1 for the other types)."""
    return getattr(rope, "attention_factor", 1.0)


def rope_row(rope, head_dim, position):
    """``(cos, sin)``, each ``(head_dim,)`` float32, for the decode step at ``position``."""
    inv = inv_freq(rope, head_dim, position + 1)
    freqs = (np.float32(position) * inv).astype(np.float32)
    angles = np.concatenate([freqs, freqs])
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    scale = attention_factor(rope)
    if scale != 1.0:
        cos, sin = (cos * np.float32(scale)).astype(np.float32), (sin * np.float32(scale)).astype(np.float32)
    return cos, sin


def rope_table(rope, head_dim, context):
    """``(cos, sin)``, each ``(context, head_dim)`` float32: row ``p`` is :func:`rope_row` at ``p``."""
    rows = [rope_row(rope, head_dim, p) for p in range(context)]
    return np.stack([c for c, _ in rows]), np.stack([s for _, s in rows])
