"""The memory layout pass: the regions the chip ops need, allocated in order and filled from the checkpoint.

Weights are stored in the order their op streams them: a GEMV's matrix per
tile of ``lanes`` outputs, k rows of ``lanes`` (zero-padded), as bf16 or
fp32 words as the weights policy chose (:func:`sw.compiler.compile.stream_dtypes`;
the AGCU widens bf16 to fp32 lanes); norm gains, tables, the KV caches and
activations are fp32. Each region is converted from one source tensor (or
one stacked pair) at a time, so only the image itself is whole-model sized.
"""

import numpy as np

from sw.compiler.decode import pad_halves
from sw.compiler.memory_map import MemoryMap
from sw.golden.arith import bf16_to_fp32, fp32_to_bf16
from sw.model.rope import rope_table

MASKED = -1.0e30                   # added to scores past the current position; exp() of it is 0
CHUNK = 1 << 20                    # values rounded at a time


def fp32_words(array):
    return np.ascontiguousarray(np.asarray(array, dtype=np.float32)).view(np.uint32).reshape(-1)


def round_bf16(array):
    """float32 ``array`` rounded to the nearest bf16 values (ties to even), as float32.

    The chip's own rounding (:func:`sw.golden.arith.fp32_to_bf16`): equal to torch's
    ``.to(torch.bfloat16)`` except that fp32 subnormals, which the chip's arithmetic reads as zero,
    become zero; a magnitude past bf16's largest value becomes infinity. Rounded :data:`CHUNK`
    values at a time, so the temporaries stay small whatever the tensor.
    """
    words = fp32_words(array)
    out = np.empty_like(words)
    for i in range(0, words.size, CHUNK):
        out[i:i + CHUNK] = bf16_to_fp32(fp32_to_bf16(words[i:i + CHUNK]))
    return out.view(np.float32).reshape(np.shape(array))


def bf16_words(array):
    """bf16 values packed two to a 32-bit word, the first in the low half (as the AGCU widens them).

    The high halves of ``array``'s fp32 patterns (exact for bf16 values), written straight into the
    output in ``array``'s C order: no fp32 copy of a strided view is made.
    """
    a = np.asarray(array, np.float32)
    halves = np.zeros(a.size + a.size % 2, "<u2")
    np.right_shift(a.view(np.uint32), 16, out=halves[:a.size].reshape(a.shape), casting="unsafe")
    return halves.view("<u4")


def gemv_layout(w, lanes):
    """A (n, k) weight as its GEMV streams it: per tile of ``lanes`` outputs, k rows of ``lanes`` (zero-padded).

    A view of ``w`` when ``n`` is whole tiles (the words functions copy it once, into the image).
    """
    n, k = w.shape
    tiles = -(-n // lanes)
    w = np.asarray(w, np.float32)
    if n % lanes:
        w = np.concatenate([w, np.zeros((tiles * lanes - n, k), np.float32)])
    return w.reshape(tiles, lanes, k).transpose(0, 2, 1)


def _rope(context, hd, rope, true_hd):
    cos, sin = (pad_halves(t, hd) for t in rope_table(rope, true_hd, context))
    # The chip adds x * cos and swap_halves(x) * sin; rotate_half's minus sign goes into the first half of sin.
    return {"rope.cos": cos, "rope.sin": np.concatenate([-sin[:, :hd // 2], sin[:, hd // 2:]], axis=1)}


def mask_table(context, window=0):
    """(context, context) scores mask: row p is 0 where position p attends (keys 0..p, or the last
    ``window`` of them) and :data:`MASKED` elsewhere."""
    key, query = np.arange(context)[None, :], np.arange(context)[:, None]
    seen = (key <= query) & ((key > query - window) if window else True)
    return np.where(seen, 0.0, MASKED)


def argmax_scale(n):
    """The power of two the argmax op scales indices by: ``2**-k`` with ``2**k >= n`` (exact in fp32)."""
    return 2.0 ** -max(n - 1, 1).bit_length()


def argmax_tables(n, vocab):
    """The argmax op's tables over ``n`` logits, ``vocab`` of them real, as float32 ``(2, n)``: each logit's
    index negated and scaled by :func:`argmax_scale` (``-inf`` for the padding past ``vocab``), and what the
    max adds to each logit (0; ``-inf`` for the padding, so a padding logit never wins)."""
    i = np.arange(n, dtype=np.float64)
    return np.stack([np.where(i < vocab, -i * argmax_scale(n), -np.inf),
                     np.where(i < vocab, 0.0, -np.inf)]).astype(np.float32)


def layout(placements, target, weights, *, gemv_bf16=False, embed_bf16=False):
    """Allocate ``placements`` (:class:`sw.compiler.lower.Placement`) in order and fill them.

    Returns ``(memory map, image, zeroed)``: region name -> uint32 words to load, and the
    regions to clear before a new sequence (the KV caches).
    """
    mmap, image, zeroed = MemoryMap(target.memory), {}, []
    matrix = bf16_words if gemv_bf16 else fp32_words
    for p in placements:
        if p.layout in ("kv_cache", "output"):
            mmap.add(p.name, p.nbytes, p.what)
            zeroed += [p.name] if p.layout == "kv_cache" else []
            continue
        if p.layout == "rows":
            words = (bf16_words if embed_bf16 else fp32_words)(weights[p.sources[0]])
        elif p.layout == "vector":
            words = fp32_words(weights[p.sources[0]])
        elif p.layout == "gemv":
            stacked = np.concatenate([weights[s] for s in p.sources]) if len(p.sources) > 1 else weights[p.sources[0]]
            words = matrix(gemv_layout(stacked, target.array.lanes))
        elif p.layout == "rope":
            words = fp32_words(_rope(*p.args)[p.name])
        elif p.layout == "bias":
            stacked = np.concatenate([weights[s] for s in p.sources])
            words = fp32_words(np.pad(stacked, (0, p.args[0] - stacked.size)))
        elif p.layout == "mask":
            words = fp32_words(mask_table(*p.args))
        elif p.layout == "argmax":
            n, vocab, which = p.args
            words = fp32_words(argmax_tables(n, vocab)[which])
        else:
            raise ValueError(f"region {p.name}: unknown layout {p.layout!r}")
        mmap.add(p.name, 4 * words.size, p.what)
        image[p.name] = words
    return mmap, image, zeroed
