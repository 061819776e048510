"""The credit service's loop compiled: ``credit.c`` built on first use with the system C compiler, loaded with ctypes.

:func:`sw.model.chip._credit_service` serves a tier's read streams word by word under the AGCUs' credits; in
Python that costs about a microsecond a word, most of a cold decode's time on a large target
(docs/performance.md, "Compiled credit service"). :func:`service` runs the same loop in C and gives the same
responses; it returns ``None`` where the compiled loop is not available, and the caller runs the Python loop.

The library is built by :mod:`sw.model.cext`: with ``$CC`` (else ``cc`` or ``gcc`` from PATH) and ``-O2`` into
``$OPENRDU_BUILD_DIR/model`` (default ``build/model`` in a checkout, the user's cache folder
``$XDG_CACHE_HOME/openrdu/model`` or ``~/.cache/openrdu/model`` for an installed package), named by a hash of the source, the
compiler command and the platform, and written to a temporary file first, then renamed: parallel test workers
build it at most once each and never load a partial file. Without a compiler, or when the build fails, one
line on stderr says so (once per process) and the Python loop runs. ``OPENRDU_NO_CEXT=1`` forces the Python
loop.
"""

import ctypes
import operator
import subprocess
import sys
from pathlib import Path

import numpy as np

from sw.model import cext

SOURCE = Path(__file__).with_name("credit.c")
_REPO = cext.REPO

# The loaded function, False once a build has failed in this process (warned once), None before the first try.
_LOADED = None


def build_dir():
    """The folder the compiled library is cached in (:func:`sw.model.cext.build_dir`)."""
    return cext.build_dir(_REPO)


def compiler():
    """The C compiler command as a list (:func:`sw.model.cext.compiler`), or None."""
    return cext.compiler()


def _build(again=False):
    """Path of the compiled library, built if not cached (or ``again``): :func:`sw.model.cext.build`."""
    return cext.build(SOURCE, cc=compiler(), folder=build_dir(), again=again)


def _load():
    """The compiled ``credit_service``, or None (forced off, or the build failed: warned once)."""
    global _LOADED
    if cext.disabled():
        return None
    if _LOADED is None:
        try:
            path = _build()
            try:
                fn = ctypes.CDLL(str(path)).credit_service
            except (OSError, AttributeError):
                # A cached library that does not load (truncated, another user's private file): build it once more.
                fn = ctypes.CDLL(str(_build(again=True))).credit_service
        except (OSError, AttributeError, ValueError, subprocess.SubprocessError) as err:
            print(f"openrdu: the compiled credit service is not available ({err}); using the Python loop",
                  file=sys.stderr)
            _LOADED = False
            return None
        p = ctypes.c_void_p
        fn.argtypes = [ctypes.c_int64, p, p, p, p] + [ctypes.c_int64] * 8 + [p, p, p, p]
        fn.restype = ctypes.c_int
        _LOADED = fn
    return _LOADED or None


def available():
    """Whether :func:`service` runs the compiled loop (building it now if needed)."""
    return _load() is not None


def service(streams, outstanding, depth, latency, gain, cost, start_cycles, read_cycles, queue_cycles):
    """``chip._credit_service``'s responses from the compiled loop, or None where it does not apply.

    Parameters
    ----------
    streams : list of (words, vectors, ready, held)
        As ``chip._credit_service`` takes them; ``ready`` an integer array of ``vectors`` cycles.
    outstanding : int
        Credits per AGCU.
    depth, latency : int
        The tier's queue depth and latency.
    gain, cost : int
        The tier's token bucket (:class:`sw.model.memory.TierModel`).
    start_cycles, read_cycles, queue_cycles : int
        ``AGCU_START_CYCLES``, ``AGCU_READ_CYCLES`` and ``QUEUE_CYCLES``.

    Returns
    -------
    list of list of int or None
        Per stream its words' response cycles; None without the compiled loop, or for inputs it does not take
        (negative or huge counts, a readiness array of another length or type, a queue depth under one): the Python
        loop then decides, errors included.
    """
    found = responses(streams, outstanding, depth, latency, gain, cost, start_cycles, read_cycles, queue_cycles)
    if found is None:
        return None
    out, ends = found
    out = out.tolist()
    return [out[a:b] for a, b in zip([0] + ends[:-1], ends)]


def responses(streams, outstanding, depth, latency, gain, cost, start_cycles, read_cycles, queue_cycles):
    """:func:`service`'s responses as one int64 array, stream after stream, and where each stream's end in it (a
    list), or None as there: callers that need a few of the cycles save the lists."""
    fn = _load()
    scalars = (outstanding, depth, latency, gain, cost, start_cycles, read_cycles, queue_cycles)
    # Far inside int64 (cycles, counts and their sums in C cannot wrap where Python's integers would not), with the
    # products bounded below.
    if fn is None or depth < 1 or gain < 1 or max(abs(x) for x in scalars) >= 1 << 40:
        return None
    n = len(streams)
    counts = []
    readies = []
    for words, vectors, ready, held in streams:
        try:
            words, vectors, held = operator.index(words), operator.index(vectors), operator.index(held)
        except TypeError:
            return None
        if max(words, vectors, held) >= 1 << 40:
            return None
        # int64 holds every readiness cycle (a uint64 could wrap).
        wide = ready.dtype.kind == "i" or (ready.dtype.kind == "u" and ready.dtype.itemsize < 8) \
            if isinstance(ready, np.ndarray) else False
        if min(words, vectors, held) < 0 or not wide or ready.shape != (vectors,):
            return None
        # Products such as word index x vectors in C stay far inside int64.
        if max(words, held, 1) * max(vectors, 1) >= 1 << 50:
            return None
        counts.append((words, vectors, held))
        readies.append(ready)
    # Per stream its words, vectors and held words; then its responses' length (max(words, held)) and requests.
    table = np.zeros((5, n), np.int64)
    if n:
        table[:3] = np.array(counts, np.int64).T
        np.maximum(table[0], table[2], out=table[3])
        np.maximum(table[0] - table[2], 0, out=table[4])
    words, vectors, held, lengths, requests = table
    ready = np.ascontiguousarray(np.concatenate(readies) if readies else np.zeros(0), np.int64)
    if ready.size and ready.max() >= 1 << 60:
        return None
    ends = np.cumsum(lengths).tolist()
    total = ends[-1] if ends else 0
    # out, popped (as ready), issued (one per request) and the loop's state (6 per stream), in one buffer.
    scratch = np.empty(total + ready.size + int(requests.sum()) + 6 * n, np.int64)
    at = scratch.ctypes.data
    if fn(n, words.ctypes.data, vectors.ctypes.data, held.ctypes.data, ready.ctypes.data, outstanding, depth, latency,
          gain, cost, start_cycles, read_cycles, queue_cycles, at, at + 8 * total, at + 8 * (total + ready.size),
          at + 8 * (total + ready.size + int(requests.sum()))):
        return None
    return scratch[:total], ends
