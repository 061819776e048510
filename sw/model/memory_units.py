"""Fast functional model of the AGCU and the copy engine (hw/mem/agcu.py, hw/mem/copy.py).

It gives the addresses a transfer visits, the vectors an AGCU read delivers
and the bytes a write or copy leaves in memory, including what the hardware
does with accesses outside a tier: such a word is not performed (a read
yields zeros) and is reported, never wrapped. Memories are numpy ``uint8``
arrays (or anything with ``read(offset, size)`` / ``write(offset, bytes)``,
such as :class:`sw.model.memory.SparseMemory`) holding one whole tier.
"""

import functools
from dataclasses import dataclass

import numpy as np

from facts.latency import QUEUE_CYCLES
from sw.loopnest import LoopNest, agcu_last_level
from sw.model.memory import FlatMemory
from sw.errors import LaunchError


def distinct(values):
    """Whether the integers ``values`` (a 1-D array) are all different: ``np.unique(values).size == values.size``,
    by a sort (numpy's hashed ``unique`` takes ten times as long on the few thousand addresses of a pattern)."""
    ordered = np.sort(values, kind="stable")
    return bool((ordered[1:] != ordered[:-1]).all())


def agcu_nest(counts, strides, last_every=0):
    """The :class:`~sw.loopnest.LoopNest` of an AGCU's register fields ``counts``, ``strides``, ``last_every``."""
    return LoopNest(counts, strides, last_level=agcu_last_level(last_every)).check("pattern")


def transfer_addresses(base, nest, *, word_bytes=16, runtime_offset=0):
    """Byte addresses of a transfer of ``nest`` (TLN words) from byte ``base``, in issue order.

    Returns an int64 array of shape (nest.count,); addresses may lie outside the tier.
    """
    return base + (nest.addresses() + runtime_offset) * word_bytes


def _in_range(addr, capacity, word_bytes):
    return (addr >= 0) & (addr < capacity) & (addr % word_bytes == 0)


def _read_word(memory, addr, word_bytes):
    if hasattr(memory, "read"):
        return np.asarray(memory.read(int(addr), word_bytes), dtype=np.uint8)
    return np.asarray(memory[int(addr):int(addr) + word_bytes], dtype=np.uint8)


def _write_word(memory, addr, raw):
    if hasattr(memory, "write"):
        memory.write(int(addr), raw)
    else:
        memory[int(addr):int(addr) + raw.size] = raw


@dataclass
class TransferResult:
    """What one AGCU transfer did: its words, and its error report as the status shows it."""

    addresses: np.ndarray
    error: bool
    error_word: int
    words: int


def _report(addresses, capacity, word_bytes):
    bad = ~_in_range(addresses, capacity, word_bytes)
    first = int(np.argmax(bad)) if bad.any() else 0
    return TransferResult(addresses, bool(bad.any()), first, int((~bad).sum()))


def _gather(memory, addresses, capacity, word_bytes):
    """The words at ``addresses`` ((n, word_bytes) uint8), zeros where outside the tier.

    Reads the span the addresses cover once, instead of word by word, when it is not much larger than them.
    """
    raw = np.zeros((addresses.size, word_bytes), dtype=np.uint8)
    ok = _in_range(addresses, capacity, word_bytes)
    if not ok.any():
        return raw
    lo, hi = int(addresses[ok].min()), int(addresses[ok].max()) + word_bytes
    if hi - lo <= max(1 << 20, 8 * addresses.size * word_bytes):
        span = _read_span(memory, lo, hi - lo)
        raw[ok] = span[(addresses[ok] - lo)[:, None] + np.arange(word_bytes)]
        return raw
    for i in np.flatnonzero(ok):
        raw[i] = _read_word(memory, addresses[i], word_bytes)
    return raw


def _read_span(memory, offset, size):
    if hasattr(memory, "read"):
        return np.asarray(memory.read(offset, size), dtype=np.uint8)
    return np.asarray(memory[offset:offset + size], dtype=np.uint8)


def agcu_read(memory, capacity, base, counts, strides, *, lanes, word_bytes=16, runtime_offset=0, last_every=0,
              bf16=False):
    """:func:`transfer_read` of the transfer an AGCU's register fields describe (see :func:`agcu_nest`)."""
    return transfer_read(memory, capacity, base, agcu_nest(counts, strides, last_every), lanes=lanes,
                         word_bytes=word_bytes, runtime_offset=runtime_offset, bf16=bf16)


@functools.lru_cache(maxsize=4096)
def _layout(base, nest, capacity, word_bytes, runtime_offset):
    """What a transfer's addresses alone decide, computed once per transfer shape.

    Returns (report, rows): the :class:`TransferResult`; the words' row indices in the tier seen as
    (capacity / word_bytes, word_bytes) bytes, a ``slice`` when they are consecutive, or None when some word
    lies outside the tier or two words share a row. Callers do not modify them.
    """
    if base % word_bytes == 0 and capacity % word_bytes == 0:
        # The nest's extent and layout (nest_rows, kept per nest: the launch's plan takes them too) tell whether
        # every word lies in the tier and how, without passes over the addresses for each base; the addresses
        # are transfer_addresses' from the nest's word offsets kept there.
        least, greatest, offsets, n, unique = nest_rows(nest)
        row = base // word_bytes + runtime_offset
        if n and row + least >= 0 and (row + greatest + 1) * word_bytes <= capacity:
            words = offsets + np.arange(n, dtype=np.int64) if isinstance(offsets, int) else offsets
            addresses = base + (words + runtime_offset) * word_bytes
            addresses.flags.writeable = False
            rows = slice(row + offsets, row + offsets + n) if isinstance(offsets, int) else \
                row + offsets if unique else None
            return TransferResult(addresses, False, 0, n), rows
    addresses = transfer_addresses(base, nest, word_bytes=word_bytes, runtime_offset=runtime_offset)
    addresses.flags.writeable = False
    report = _report(addresses, capacity, word_bytes)
    rows = None
    n = addresses.size
    if not report.error and capacity % word_bytes == 0:
        index = addresses // word_bytes
        if n and np.array_equal(index, index[0] + np.arange(n)):
            rows = slice(int(index[0]), int(index[0]) + n)
        elif distinct(index):
            rows = index
    return report, rows


@functools.lru_cache(maxsize=1024)
def _marks(nest, lanes, word_bytes, bf16):
    """The ``last`` flag of each vector a read of ``nest`` delivers (see :func:`transfer_read`); not to modify."""
    ends = nest.ends()
    ends[-1:] = True
    if bf16:
        ends = np.stack([np.zeros_like(ends), ends], axis=1).reshape(-1)
    vector_bytes = 4 * lanes
    n = -(-ends.size * word_bytes // vector_bytes)
    words_per_vector = max(1, vector_bytes // word_bytes)
    vectors_per_word = max(1, word_bytes // vector_bytes)
    last = np.zeros(n, dtype=bool)
    if n:
        if vectors_per_word > 1:
            last[vectors_per_word - 1::vectors_per_word] = ends
        else:
            # Vector j ends with word min(j * wpv + wpv, words) - 1.
            last_word = np.minimum(np.arange(1, n + 1) * words_per_vector, ends.size) - 1
            last = ends[last_word]
    last.flags.writeable = False
    return last


def _tier_bytes(memory, capacity, word_bytes):
    """The tier's bytes as a (capacity / word_bytes, word_bytes) array, when ``memory`` keeps them in one array."""
    raw = memory.bytes if isinstance(memory, FlatMemory) else memory if isinstance(memory, np.ndarray) else None
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1 or raw.size != capacity:
        return None
    return raw.reshape(-1, word_bytes)


def transfer_read(memory, capacity, base, nest, *, lanes, word_bytes=16, runtime_offset=0, bf16=False):
    """Vectors an AGCU read of ``nest`` from byte ``base`` delivers.

    Returns ((n, lanes) uint32, last flags (n,), TransferResult).

    With ``bf16`` every word is widened to two words of fp32 lanes (each
    16-bit value in a lane's top half), its low half first, and only the
    second carries the word's group flag.

    A word outside the tier reads as zeros. When the words do not fill a
    whole number of vectors the final vector's missing lanes are zero.
    ``last`` marks the final vector and each vector whose last word the
    nest marks (``nest.ends()``; the RTL reads the group flag of a vector's
    last word, or of a vector's word when several vectors share it).
    """
    report, rows = _layout(base, nest, capacity, word_bytes, runtime_offset)
    tier = None if rows is None else _tier_bytes(memory, capacity, word_bytes)
    if tier is not None:
        # take, not fancy indexing: ten times faster on the few thousand rows of a gathered K or V read.
        raw = tier[rows].copy() if isinstance(rows, slice) else tier.take(rows, axis=0)
    else:
        raw = _gather(memory, report.addresses, capacity, word_bytes)
    last = _marks(nest, lanes, word_bytes, bf16).copy()
    return as_vectors(raw, lanes, bf16), last, report


def as_vectors(raw, lanes, bf16=False):
    """The (n, lanes) uint32 vectors of memory words ``raw`` ((words, word_bytes) uint8: a new array, or with
    ``bf16`` any array, as the widened words are a new one), as an AGCU read delivers them: bf16 words widened,
    the final vector's missing lanes zero."""
    if bf16:
        wide = raw.reshape(-1).view("<u2").astype("<u4")
        wide <<= 16
        raw = wide.view(np.uint8)
    flat = raw.reshape(-1)
    vector_bytes = 4 * lanes
    if flat.size % vector_bytes == 0:
        return flat.view("<u4").reshape(-1, lanes)
    padded = np.zeros(-(-flat.size // vector_bytes) * vector_bytes, dtype=np.uint8)
    padded[:flat.size] = flat
    return padded.view("<u4").reshape(-1, lanes)


@functools.lru_cache(maxsize=4096)
def nest_rows(nest):
    """Where a transfer of ``nest`` lies relative to its base, in words: ``(least, greatest, rows, count,
    distinct)``; ``rows`` is the first word's offset (an int) when the words are consecutive, else every
    word's offset (an int64 array, not to modify). From a base of ``b`` words the transfer visits rows
    ``b + rows`` of the tier seen as (capacity / word_bytes, word_bytes) bytes."""
    offsets = nest.addresses()
    n = offsets.size
    if n and np.array_equal(offsets, offsets[0] + np.arange(n)):
        rows, unique = int(offsets[0]), True
    else:
        rows, unique = offsets, distinct(offsets)
        rows.flags.writeable = False
    least, greatest = (int(offsets.min()), int(offsets.max())) if n else (0, -1)
    return least, greatest, rows, n, unique


def tier_rows(memory, capacity, word_bytes):
    """:func:`_tier_bytes`: the tier as (capacity / word_bytes, word_bytes) bytes, or None when it is not one array."""
    return _tier_bytes(memory, capacity, word_bytes) if capacity % word_bytes == 0 else None


def agcu_write(memory, capacity, base, counts, strides, vectors, *, word_bytes=16, runtime_offset=0):
    """:func:`transfer_write` of the transfer an AGCU's register fields describe (see :func:`agcu_nest`)."""
    return transfer_write(memory, capacity, base, agcu_nest(counts, strides), vectors, word_bytes=word_bytes,
                          runtime_offset=runtime_offset)


def transfer_write(memory, capacity, base, nest, vectors, *, word_bytes=16, runtime_offset=0):
    """Store vectors ((n, lanes) uint32) the way an AGCU write of ``nest`` from byte ``base`` does.

    Returns its TransferResult. Words past the nest's end are dropped; words
    outside the tier are not written.
    """
    report, rows = _layout(base, nest, capacity, word_bytes, runtime_offset)
    addresses = report.addresses
    flat = np.ascontiguousarray(np.asarray(vectors, dtype="<u4")).view(np.uint8).reshape(-1)
    if flat.size < addresses.size * word_bytes:
        raise LaunchError(f"{flat.size} bytes of vectors do not cover the pattern's {addresses.size} words")
    n = addresses.size
    tier = None if rows is None else _tier_bytes(memory, capacity, word_bytes)
    if tier is not None:
        # Every word in the tier, no two on one row: one store, as the word-by-word loop leaves it.
        tier[rows] = flat[:n * word_bytes].reshape(n, word_bytes)
    elif n and _in_range(addresses, capacity, word_bytes).all() and \
            np.array_equal(addresses, addresses[0] + word_bytes * np.arange(n)):
        # Consecutive words in the tier: one store of the whole run, as the word-by-word loop leaves it.
        _write_word(memory, addresses[0], flat[:n * word_bytes])
    else:
        for i, addr in enumerate(addresses):
            if _in_range(addr, capacity, word_bytes):
                _write_word(memory, addr, flat[i * word_bytes:(i + 1) * word_bytes])
    return report


def vectors_for_words(words, lanes, word_bytes=16):
    """Vectors an AGCU write needs to supply ``words`` words."""
    return -(-words * word_bytes // (4 * lanes))


@dataclass
class CopyResult:
    error: bool
    error_addr: int
    bytes: int


def copy(src, src_capacity, src_addr, dst, dst_capacity, dst_addr, length, *, word_bytes=16):
    """Functional copy engine; returns the status it ends with.

    Without errors every word is copied. With an error the hardware stops at
    the first failing word (read or write); words before it are copied. (The
    hardware may have written a few more good words that were already in
    flight when the error came back; this model gives the guaranteed prefix.)
    """
    if length % word_bytes:
        return CopyResult(True, src_addr, 0)
    done = 0
    for i in range(length // word_bytes):
        s, d = src_addr + i * word_bytes, dst_addr + i * word_bytes
        if not _in_range(s, src_capacity, word_bytes):
            return CopyResult(True, s, done)
        if not _in_range(d, dst_capacity, word_bytes):
            return CopyResult(True, d, done)
        _write_word(dst, d, _read_word(src, s, word_bytes))
        done += word_bytes
    return CopyResult(False, 0, done)


def copy_cycles(length, src_tier, dst_tier, *, word_bytes=16):
    """Estimated cycles of an uncontended copy: the slower tier's streaming time plus both latencies.

    When source and destination share a tier its bandwidth serves both the
    reads and the writes.
    """
    words = length // word_bytes
    src_cpw = word_bytes / float(src_tier.bytes_per_cycle)
    dst_cpw = word_bytes / float(dst_tier.bytes_per_cycle)
    per_word = src_cpw + dst_cpw if src_tier is dst_tier else max(src_cpw, dst_cpw)
    return words * per_word + src_tier.latency + dst_tier.latency + 2 * QUEUE_CYCLES


def stream_cycles(words, tier, *, word_bytes=16):
    """Estimated cycles of an uncontended AGCU stream of ``words`` words on ``tier``."""
    return words * word_bytes / float(tier.bytes_per_cycle) + tier.latency + QUEUE_CYCLES


def host_cycles(length, params, dst_tier):
    """Estimated cycles of a host-to-tier transfer of ``length`` bytes over the host link."""
    words = -(-length // params.word_bytes)
    return words * params.word_bytes / float(params.host_bytes_per_cycle) + dst_tier.latency + QUEUE_CYCLES
