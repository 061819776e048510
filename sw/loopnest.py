"""An affine loop nest: the one description of an address pattern, and its address enumerator.

The PMU's read and write patterns (:class:`sw.tile.pmu.AddressPattern`) and
the AGCUs' transfers (:class:`sw.runtime.chip.Pattern`) each hold a
:class:`LoopNest`; the fast models enumerate their addresses and ``last``
marks here, and ``hw.loopnest.LoopNestCounter`` walks the same nest in RTL.

Example: a 4 x 3 tile of a row-major matrix 16 words wide, ``last`` on each
row's final word::

    >>> nest = LoopNest(bounds=(4, 3), strides=(1, 16), last_level=0)
    >>> nest.addresses().tolist()
    [0, 1, 2, 3, 16, 17, 18, 19, 32, 33, 34, 35]
    >>> np.flatnonzero(nest.ends()).tolist()
    [3, 7, 11]
"""

from dataclasses import dataclass
from math import prod

import numpy as np

from facts.loopnest import LEVELS, MAX_COUNT


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class LoopNest:
    """Up to ``LEVELS`` nested loops, level 0 innermost (fastest).

    Iteration ``(i_0, i_1, ...)`` has address ``offset + sum_k i_k * strides[k]``,
    in the unit of the strides (PMU words, TLN words).

    Parameters
    ----------
    bounds : sequence of int
        Iterations of each level, innermost first (1 to ``LEVELS`` levels).
        Missing outer levels run once.
    strides : sequence of int
        Signed stride of each level; 0 repeats.
    offset : int
        Added to every address.
    last_level : int or None
        Mark (``last``) each iteration where levels ``0..last_level`` all
        finish; the default, the outermost level, marks the end of the pass.
        None marks no iteration.

    Construction only normalises the sequences to tuples; :meth:`check`
    refuses nests no address generator can run, and each user of a nest
    adds its unit's limits (strides and offset that fit, bounds of at least 1).
    """

    bounds: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int = 0
    last_level: int | None = LEVELS - 1

    def __post_init__(self):
        object.__setattr__(self, "bounds", tuple(self.bounds))
        object.__setattr__(self, "strides", tuple(self.strides))

    @classmethod
    def linear(cls, count, stride=1, **kwargs):
        """``count`` addresses ``stride`` apart, one level."""
        return cls(bounds=(count,), strides=(stride,), **kwargs)

    def check(self, name="nest", *, min_bound=0):
        """Raise ``ValueError`` naming ``name.field`` and the problem; return self when the nest is well-formed.

        ``min_bound`` is the smallest bound accepted: 0 (an empty nest) for an
        AGCU transfer, 1 for a PMU pass.
        """
        if not 1 <= len(self.bounds) <= LEVELS:
            raise ValueError(f"{name}.bounds has {len(self.bounds)} levels; 1 to {LEVELS} are supported")
        if len(self.strides) != len(self.bounds):
            raise ValueError(f"{name}.strides has {len(self.strides)} entries for {len(self.bounds)} bounds")
        for k, bound in enumerate(self.bounds):
            if not _is_int(bound) or not min_bound <= bound <= MAX_COUNT:
                raise ValueError(f"{name}.bounds[{k}] is {bound!r}; every loop bound must be an integer "
                                 f"in [{min_bound}, {MAX_COUNT}]")
        for k, stride in enumerate(self.strides):
            if not _is_int(stride):
                raise ValueError(f"{name}.strides[{k}] is {stride!r}; strides must be integers")
        if not _is_int(self.offset):
            raise ValueError(f"{name}.offset is {self.offset!r}; it must be an integer")
        if self.last_level is not None and self.last_level not in range(LEVELS):
            raise ValueError(f"{name}.last_level is {self.last_level!r}; use a level 0 to {LEVELS - 1} "
                             f"or None")
        return self

    @property
    def count(self):
        """Iterations (addresses) of one pass."""
        return prod(self.bounds)

    def padded(self):
        """Bounds and strides extended to ``LEVELS`` levels with bound 1, stride 0."""
        pad = LEVELS - len(self.bounds)
        return self.bounds + (1,) * pad, self.strides + (0,) * pad

    def compact(self):
        """The same addresses and ``last`` marks in the fewest levels: levels of bound 1 dropped, a level
        merged into the next where that one continues it (``strides[k + 1] == bounds[k] * strides[k]``)
        and no mark falls between them."""
        bounds, strides, last = list(self.bounds), list(self.strides), self.last_level
        k = 0
        while k < len(bounds) and len(bounds) > 1:
            # A bound-1 level finishes at every iteration, so it adds no mark; but "levels 0..0" on a bound-1
            # level 0 marks every iteration, which no other last_level says.
            if bounds[k] == 1 and (last is None or k != last or k > 0):
                del bounds[k], strides[k]
                if last is not None and k <= last:
                    last -= 1
                k = max(k - 1, 0)
                continue
            if k + 1 < len(bounds) and strides[k + 1] == bounds[k] * strides[k] and last != k \
                    and bounds[k] * bounds[k + 1] <= MAX_COUNT:
                bounds[k] *= bounds[k + 1]
                del bounds[k + 1], strides[k + 1]
                if last is not None and last > k:
                    last -= 1
                continue
            k += 1
        return LoopNest(tuple(bounds), tuple(strides), self.offset, last)

    def with_outer(self, count, stride, levels=LEVELS):
        """This nest ``count`` times, ``stride`` apart, as its level ``levels - 1``: the loop of a looped
        kernel (:mod:`sw.compiler.loop`). Each pass's final iteration keeps its mark (a nest marking only
        its end now marks the end of every pass). ValueError when the nest needs every level itself."""
        nest = self if len(self.bounds) < levels else self.compact()
        if len(nest.bounds) >= levels:
            raise ValueError(f"a nest of {len(nest.bounds)} levels has no level left for an outer loop")
        pad = levels - 1 - len(nest.bounds)
        last = levels - 2 if nest.last_level is None or nest.last_level >= len(nest.bounds) - 1 else nest.last_level
        return LoopNest(nest.bounds + (1,) * pad + (count,), nest.strides + (0,) * pad + (stride,), nest.offset,
                        last)

    def span(self):
        """Lowest and highest address of one pass."""
        lo = hi = self.offset
        for bound, stride in zip(self.bounds, self.strides):
            reach = stride * (bound - 1)
            lo, hi = lo + min(0, reach), hi + max(0, reach)
        return lo, hi

    def addresses(self):
        """Addresses of one pass in iteration order, level 0 fastest (int64 array, shape (count,))."""
        addr = np.full((), self.offset, dtype=np.int64)
        for bound, stride in zip(reversed(self.bounds), reversed(self.strides)):
            addr = addr[..., None] + np.arange(bound, dtype=np.int64) * np.int64(stride)
        return addr.reshape(-1)

    def ends(self):
        """``last`` mark of each iteration of one pass (bool array, shape (count,))."""
        count = self.count
        if self.last_level is None or count == 0:
            return np.zeros(count, dtype=bool)
        inner = prod(self.bounds[:self.last_level + 1])
        return np.arange(count) % inner == inner - 1


def agcu_last_every(last_level):
    """The AGCU register ``last_every`` that marks a nest's ``last_level``.

    An AGCU read always marks its final word, so None and the outermost level
    both give 0 (the final word only).
    """
    return 0 if last_level is None or last_level == LEVELS - 1 else last_level + 1


def agcu_last_level(last_every):
    """The ``last_level`` an AGCU register ``last_every`` marks; inverse of :func:`agcu_last_every`."""
    return last_every - 1 if last_every else None
