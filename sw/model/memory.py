"""Fast model of the off-chip tiers: their bytes and the timing of their controllers.

:class:`SparseMemory` holds a tier's bytes in 4 KiB pages, so a 1 GiB DDR
tier costs only what is touched. :class:`TierModel` replays the controller's
rules (hw/mem/controller.py) request by request: a bounded queue, a token
bucket that lets one word leave per ``word_bytes / bytes_per_cycle``
cycles, and a fixed latency. For requests the requester offers at given
cycles it gives the cycle each response is valid; on streams without
back-pressure from the requester it is exact.
"""

from dataclasses import dataclass

import numpy as np

from facts.latency import QUEUE_CYCLES
from hw.mem.params import TierParams
from sw.errors import OpenRDUError

PAGE = 4096


class MemoryRangeError(OpenRDUError, IndexError):
    """An access outside a tier; the hardware flags the same access as an error."""


class SparseMemory:
    """A zero-initialised byte array of ``capacity`` bytes stored by page."""

    def __init__(self, name, capacity):
        self.name, self.capacity = name, capacity
        self.pages = {}

    def _check(self, offset, size):
        if offset < 0 or size < 0 or offset + size > self.capacity:
            raise MemoryRangeError(f"{self.name}: bytes [{offset:#x}, {offset + size:#x}) are outside its "
                                   f"{self.capacity:#x} bytes")

    def write(self, offset, payload):
        raw = np.ascontiguousarray(np.frombuffer(payload, dtype=np.uint8) if isinstance(payload, (bytes, bytearray))
                                   else np.asarray(payload)).view(np.uint8).reshape(-1)
        self._check(offset, raw.size)
        done = 0
        while done < raw.size:
            page, start = divmod(offset + done, PAGE)
            take = min(PAGE - start, raw.size - done)
            self.pages.setdefault(page, np.zeros(PAGE, np.uint8))[start:start + take] = raw[done:done + take]
            done += take

    def read(self, offset, size):
        self._check(offset, size)
        out = np.zeros(size, np.uint8)
        done = 0
        while done < size:
            page, start = divmod(offset + done, PAGE)
            take = min(PAGE - start, size - done)
            if page in self.pages:
                out[done:done + take] = self.pages[page][start:start + take]
            done += take
        return out

    def holds(self, offset, expected):
        """Whether the bytes at ``offset`` are ``expected`` (bytes); raises :class:`MemoryRangeError` where they
        leave the memory."""
        return self.read(offset, len(expected)).tobytes() == expected

    def view(self, offset, size):
        """The ``size`` bytes at ``offset`` in place (a numpy view that later writes show), or None where the
        memory holds them in no one array (this one, by page); raises :class:`MemoryRangeError` where they leave
        the memory."""
        self._check(offset, size)
        return None


class FlatMemory(SparseMemory):
    """A zero-initialised byte array of ``capacity`` bytes in one numpy array, :attr:`bytes`.

    ``np.zeros`` takes its memory zeroed from the allocator, so the operating
    system commits only the pages a tier touches, as :class:`SparseMemory`
    does, while an AGCU transfer is one slice or gather of :attr:`bytes`.
    """

    def __init__(self, name, capacity):
        self.name, self.capacity = name, capacity
        self.bytes = np.zeros(capacity, np.uint8)

    def write(self, offset, payload):
        raw = np.frombuffer(payload, dtype=np.uint8) if isinstance(payload, (bytes, bytearray)) \
            else np.ascontiguousarray(payload).view(np.uint8).reshape(-1)
        self._check(offset, raw.size)
        self.bytes[offset:offset + raw.size] = raw

    def read(self, offset, size):
        self._check(offset, size)
        return self.bytes[offset:offset + size].copy()

    def holds(self, offset, expected):
        # Compared in place: read() would copy the bytes first.
        return self.view(offset, len(expected)).tobytes() == expected

    def view(self, offset, size):
        self._check(offset, size)
        return self.bytes[offset:offset + size]


@dataclass
class _Bucket:
    gain: int
    cost: int
    tokens: int
    time: int = -1

    def advance(self, cycle):
        """Tokens at the start of ``cycle`` given no issue since ``self.time``."""
        if cycle <= self.time:
            return self.tokens
        cycles = cycle - self.time
        if self.tokens >= self.cost:
            return self.tokens
        need = -(-(self.cost - self.tokens) // self.gain)
        return self.tokens + self.gain * min(cycles, need)

    def earliest(self, cycle):
        """First cycle at or after ``cycle`` with a word's worth of tokens."""
        tokens = self.advance(cycle)
        if tokens >= self.cost:
            return cycle
        return cycle + -(-(self.cost - tokens) // self.gain)

    def take(self, cycle):
        self.tokens = self.advance(cycle) + self.gain - self.cost
        self.time = cycle + 1


class TierModel:
    """Bytes and timing of one tier.

    Parameters
    ----------
    tier : TierParams
    word_bytes : int
    """

    def __init__(self, tier, *, word_bytes):
        if not isinstance(tier, TierParams):
            raise TypeError(f"tier must be a TierParams, not {tier!r}")
        self.tier, self.word_bytes = tier, word_bytes
        self.memory = SparseMemory(tier.name, tier.capacity)
        rate = tier.bytes_per_cycle
        self.gain, self.cost = rate.numerator, word_bytes * rate.denominator
        self.reset_timing()

    def reset_timing(self):
        self._bucket = _Bucket(self.gain, self.cost, self.cost)
        self._issued = []
        self.last_issue = -1

    @property
    def cycles_per_word(self):
        return self.cost / self.gain

    def service(self, offers):
        """Response cycles for requests offered at ``offers`` (non-decreasing cycles).

        A request offered at cycle t (and accepted then, unless the queue is
        full) leaves the queue ``QUEUE_CYCLES`` later at the earliest, when
        a word's worth of bandwidth has accrued and after the previous word;
        its response is valid ``latency`` cycles after it leaves.
        """
        depth, latency = self.tier.queue_depth, self.tier.latency
        bucket, issued = self._bucket, self._issued
        gain, cost, tokens, time = bucket.gain, bucket.cost, bucket.tokens, bucket.time
        last_issue = self.last_issue
        first = n = len(issued)
        # _Bucket.earliest and take inlined: this loop runs once per word of every stream.
        for offer in offers:
            accept = int(offer)
            if n >= depth and issued[n - depth] > accept:
                accept = issued[n - depth]
            issue = accept + QUEUE_CYCLES
            if issue <= last_issue:
                issue = last_issue + 1
            have = tokens
            if tokens < cost:
                need = -(-(cost - tokens) // gain)
                if issue > time:
                    have = tokens + gain * min(issue - time, need)
                if have < cost:
                    issue += -(-(cost - have) // gain)
                    have = tokens + gain * min(issue - time, need) if issue > time else tokens
            tokens, time = have + gain - cost, issue + 1
            last_issue = issue
            issued.append(issue)
            n += 1
        bucket.tokens, bucket.time = tokens, time
        self.last_issue = last_issue
        return [issue + latency for issue in issued[first:]]

    def stream_cycles(self, words):
        """Cycles for ``words`` reads offered back to back from cycle 0, counting cycle 0 as the first."""
        self.reset_timing()
        return self.service([0] * words)[-1] + 1
