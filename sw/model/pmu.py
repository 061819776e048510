"""Fast model of the PMU: the RTL's results bit for bit, and its cycle count without external stalls.

The model runs pass by pass on numpy arrays. Because the buffer handshake
orders every read pass after the write pass that filled its buffer, and the
write pass that refills a buffer after its last read, applying whole passes
in that order gives the RTL's data whenever concurrent passes touch disjoint
buffers (what :meth:`PmuConfig.validate` checks for the static addresses;
runtime bases that reach into another buffer are a race in the hardware too).

Timing, matching the RTL's handshake, with passes numbered from cycle 0 (the
first cycle the configuration is enabled): a pass loads in cycle t, issues its
addresses in cycles t+1 .. t+n, and the next pass on the same side may load
in cycle t+n. A write pass may load in the cycle its buffer's last read
issues; a read pass in the cycle its buffer's last write happens. Read data
leaves one cycle after its address issues.
"""

from dataclasses import dataclass

import numpy as np

from sw.model import memory_units
from sw.tile.pmu import PmuConfig, ReadMode

READ_LATENCY = 1


def _period(index, tries=32):
    """The least p among the first ``tries`` candidates with ``index`` made of equal runs of p (at least two),
    or None."""
    n = index.size
    for p in np.flatnonzero(index == index[0])[1:tries + 1].tolist():
        # The first period's words first: most candidates fail there, without a pass over the whole index. Integers
        # are equal where their bytes are: bytes compare without array_equal's layers (a broadcast map has a
        # candidate at every lane).
        if n % p == 0 and index[p:2 * p].tobytes() == index[:p].tobytes() and \
                index[p:].tobytes() == index[:-p].tobytes():
            return p
    return None


def gather_by(source, vi0, lanes):
    """A PMU run's vo0 ((k, lanes) uint32, a new array or a view of ``vi0``) from its write vectors ``vi0``
    ((n, lanes) uint32) by a map from :meth:`PmuModel.source`."""
    flat = vi0.reshape(-1)
    if isinstance(source, slice):
        return flat[source].reshape(-1, lanes)
    if isinstance(source, tuple):
        if source[0] == "take":
            return flat.take(source[1])
        _, index, times = source
        out = np.empty((times, index.size), np.uint32)
        out[:] = flat.take(index)
        return out.reshape(-1, lanes)
    padded = np.empty(flat.size + 1, np.uint32)
    padded[0] = 0
    padded[1:] = flat
    return padded.take(source)


def source_index(source, size):
    """The flat index of the write word each of the ``size`` output words of a map from :meth:`PmuModel.source`
    shows, -1 for a zero (int64): what :func:`gather_by` does with ``source``, spelled out to reason about."""
    if isinstance(source, slice):
        return np.arange(source.start, source.start + size, dtype=np.int64)
    if isinstance(source, tuple):
        if source[0] == "take":
            return np.asarray(source[1], np.int64).reshape(-1)
        _, index, times = source
        return np.tile(np.asarray(index, np.int64), times)
    return np.asarray(source, np.int64).reshape(-1) - 1


def _size(values):
    """``np.size(values)``, at once for the arrays and empty tuples a run is given."""
    return values.size if isinstance(values, np.ndarray) else np.size(values)


@dataclass
class PmuRun:
    """Result of :meth:`PmuModel.run`.

    Attributes
    ----------
    vo0 : ndarray of uint32, shape (reads, lanes)
    last : ndarray of bool, shape (reads,)
    errors : int
        Accesses dropped for an out-of-range or misaligned address.
    cycles : int
        Cycles from enabling the configuration to the last vo0 transfer,
        inclusive, with every input always valid and vo0 always ready.
    write_passes, read_passes : int
        Complete passes run.
    """

    vo0: np.ndarray
    last: np.ndarray
    errors: int
    cycles: int
    write_passes: int
    read_passes: int


class PmuModel:
    """Execute a :class:`PmuConfig` on numpy data.

    Parameters
    ----------
    params : ArrayParams
    config : PmuConfig
        Validated here.
    banks : array of uint32, shape (pmu_bank_words, lanes), optional
        Initial contents of the banks, word ``banks[r, b]`` at address r of
        bank b (the RTL's banks start at zero). :attr:`banks` holds the
        contents after each run, so successive runs, with this or another
        layout, see what earlier ones wrote exactly as the hardware does.
    """

    def __init__(self, params, config, *, banks=None):
        if not isinstance(config, PmuConfig):
            raise ValueError(f"config must be a PmuConfig, not {config!r}")
        self.params = params
        self.config = config.validate(params)
        self._passes = None
        self._plans = {}
        self._sources = {}
        shape = (params.pmu_bank_words, params.lanes)
        if banks is None:
            self.banks = np.zeros(shape, dtype=np.uint32)
        else:
            self.banks = np.array(banks, dtype=np.uint32)
            if self.banks.shape != shape:
                raise ValueError(f"banks has shape {self.banks.shape}; the PMU's is {shape} (words, banks)")

    def _bank(self, row, column):
        """Bank holding (row, column) in this configuration's layout."""
        if self.config.stripe:
            column = column + row
        # lanes is a power of two (ArrayParams checks): the remainder is the low bits, in two's complement too.
        return column & (self.params.lanes - 1)

    def _write(self, addresses, distinct=False):
        """(vector positions, flat bank indices (k, lanes), errors) of a write pass at ``addresses``."""
        lanes, words = self.params.lanes, self.params.pmu_words
        # lanes is a power of two: % and // by it are a mask and a shift (the same integers, without a division).
        ok = (addresses >= 0) & (addresses < words) & ((addresses & (lanes - 1)) == 0)
        index = addresses[ok] >> (lanes.bit_length() - 1)
        if distinct:
            keep = slice(None)
        else:
            # Later writes to one row win, as in the hardware.
            _, first_from_end = np.unique(index[::-1], return_index=True)
            keep = len(index) - 1 - first_from_end
        row = index[keep][:, None]
        return np.flatnonzero(ok)[keep], row * lanes + self._bank(row, np.arange(lanes)[None, :]), int((~ok).sum())

    def _read(self, addresses):
        """(flat bank indices (n, lanes), valid (n, 1) or None when all are, errors) of a read pass at ``addresses``."""
        lanes, words = self.params.lanes, self.params.pmu_words
        mode = self.config.read_mode
        extent = self.config.read_extent(self.params)
        ok = (addresses >= 0) & (addresses + extent < words)
        if mode == ReadMode.ROW:
            ok &= (addresses & (lanes - 1)) == 0
        safe = np.where(ok, addresses, 0)[:, None]
        # lanes is a power of two (ArrayParams checks): // and % by it are a shift and a mask.
        shift, mask = lanes.bit_length() - 1, lanes - 1
        row, column = safe >> shift, safe & mask
        lane = np.arange(lanes)[None, :]
        if mode == ReadMode.ROW:
            index = (row << shift) + self._bank(row, lane)
        elif mode == ReadMode.COLUMN:
            # Lane l reads bank (column + stripe * row + l) at row + l, as the
            # hardware does; under the stripe that is (row + l, column).
            index = ((row + lane) << shift) + ((self._bank(row, column) + lane) & mask)
        else:
            index = np.repeat((row << shift) + self._bank(row, column), lanes, axis=1)
        bad = int((~ok).sum())
        return index, ok[:, None] if bad else None, bad

    def run(self, vi0, si0=(), si1=()):
        """Run until the inputs run out, the pass counts are reached or the buffers block.

        Parameters
        ----------
        vi0 : array, shape (n, lanes)
            Write vectors, in order.
        si0, si1 : sequences of int
            Runtime bases of the write / read passes (unsigned 32-bit), used
            when the pattern enables them.

        Returns
        -------
        PmuRun
        """
        p = self.params
        vi0 = np.asarray(vi0, dtype=np.uint32).reshape(-1, p.lanes)
        key, plan = self._planned(vi0.shape[0], si0, si1)
        ops, last, errors, cycles, fills, read_passes = plan
        if not self.banks.flags.c_contiguous:
            self.banks = np.ascontiguousarray(self.banks)
        banks = self.banks.reshape(-1)
        out = []
        for write, index, rows in ops:
            if write:
                banks[index] = vi0[rows]
            else:
                data = banks[index]
                out.append(data if rows is None else np.where(rows, data, np.uint32(0)))
        vo0 = out[0] if len(out) == 1 else np.concatenate(out) if out else np.zeros((0, p.lanes), dtype=np.uint32)
        return PmuRun(vo0=vo0, last=last.copy(), errors=errors, cycles=cycles, write_passes=fills,
                      read_passes=read_passes)

    def _planned(self, n_in, si0, si1):
        """(key, :meth:`_plan`) of a run with ``n_in`` write vectors and bases ``si0``, ``si1``; plans are kept."""
        if not (self.config.write.runtime_base or self.config.read.runtime_base):
            # Without runtime bases only the numbers of scalars count.
            key = (n_in, _size(si0), _size(si1))
            plan = self._plans.get(key)
            if plan is not None:
                return key, plan
        si0 = np.asarray(si0, dtype=np.int64).reshape(-1) & 0xFFFF_FFFF
        si1 = np.asarray(si1, dtype=np.int64).reshape(-1) & 0xFFFF_FFFF
        key = (n_in, si0.tobytes() if self.config.write.runtime_base else si0.size,
               si1.tobytes() if self.config.read.runtime_base else si1.size)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= 256:
                self._plans.clear()
                self._sources.clear()
            plan = self._plans[key] = self._plan(n_in, si0, si1)
        return key, plan

    def gather(self, vi0, si0=(), si1=()):
        """What :meth:`run` gives from zeroed banks, as one gather from ``vi0``; :attr:`banks` is left alone.

        Every word a run reads is either one of its write vectors' or a bank's initial zero, so the passes
        reduce to a map from each output word to the input word it shows (found once per plan). Returns
        ``(vo0, last, errors, cycles)`` as in :class:`PmuRun`; ``last`` is not to be modified.
        """
        lanes = self.params.lanes
        vi0 = np.asarray(vi0, dtype=np.uint32).reshape(-1, lanes)
        key, plan = self._planned(vi0.shape[0], si0, si1)
        source = self._sources.get(key)
        if source is None:
            source = self._sources[key] = self._source(plan, vi0.shape[0])
        ops, last, errors, cycles = plan[:4]
        return gather_by(source, vi0, lanes), last, errors, cycles

    def source(self, n_in, si0=(), si1=()):
        """The map :meth:`gather` applies (:func:`gather_by`) for ``n_in`` write vectors and these bases."""
        key, plan = self._planned(n_in, si0, si1)
        source = self._sources.get(key)
        if source is None:
            source = self._sources[key] = self._source(plan, n_in)
        return source

    def _source(self, plan, n_in):
        """Per output word of ``plan`` from zeroed banks, 1 + the flat index of the write word it shows, 0 for a
        zero; a ``slice`` of the flat write words when the output is one run of them; when no output word is a
        zero, ``("take", flat indices)``, or ``("tile", flat indices of one period, periods)`` when the output
        repeats (see :func:`gather_by`)."""
        lanes = self.params.lanes
        ids = np.arange(1, n_in * lanes + 1, dtype=np.int64).reshape(n_in, lanes)
        banks = np.zeros(self.banks.size, np.int64)
        out = []
        for write, index, rows in plan[0]:
            if write:
                banks[index] = ids[rows]
            else:
                data = banks[index]
                out.append(data if rows is None else np.where(rows, data, 0))
        source = (out[0] if len(out) == 1 else np.concatenate(out)) if out else np.zeros((0, lanes), np.int64)
        flat = source.reshape(-1)
        # One run of the write words: its last word first (a broadcast fails there, without a pass).
        if flat.size and flat[0] > 0 and flat[-1] == flat[0] + flat.size - 1 and \
                np.array_equal(flat, flat[0] + np.arange(flat.size)):
            return slice(int(flat[0]) - 1, int(flat[0]) - 1 + flat.size)
        if flat.size and flat.min() > 0:
            # Every output word shows a write word: gather straight from the write vectors, no zero to prepend;
            # an output that repeats one run of words (a vector broadcast to every group) is that run, copied.
            index = flat - 1
            if index.dtype != np.intp:
                index = index.astype(np.intp)
            period = _period(index)
            if period:
                return "tile", index[:period].copy(), index.size // period
            return "take", index.reshape(source.shape)
        return source.astype(np.intp)

    def _plan(self, n_in, si0, si1):
        """The passes a run with ``n_in`` write vectors and these runtime bases makes, as bank index arrays.

        Returns (ops, last, errors, cycles, write passes, read passes); each op is ``(True, bank indices,
        vector positions)`` for a write pass or ``(False, bank indices, valid or None)`` for reads (adjacent
        read passes merged; passes at one base share their arrays, not to modify). Everything here follows from
        the configuration, ``n_in`` and the bases alone.
        """
        c = self.config
        if self._passes is None:
            # The configuration's pass addresses and marks, enumerated once per model.
            w = c.write.addresses()
            self._passes = w, c.read.addresses(), c.read.ends(), memory_units.distinct(w)
        w_rel, r_rel, r_last, distinct = self._passes
        n_w, n_r = w_rel.size, r_rel.size
        rpf = c.reads_per_fill

        ops, lasts = [], []
        # Each pass's bank indices by its base (and a write's words): the passes cycle through the buffers.
        writes, reads = {}, {}
        errors = 0
        used = 0
        w_end = 0            # cycle of the previous write pass's last write
        r_end = 0            # cycle of the previous read pass's last issue
        released = []        # per fill: cycle of its last read issue
        reads_stopped = False
        read_passes = 0
        fill = 0
        while True:
            if c.write_passes and fill >= c.write_passes:
                break
            if c.write.runtime_base and fill >= si0.size:
                break
            if fill >= c.buffers and len(released) <= fill - c.buffers:
                break
            buffer_base = (fill % c.buffers) * c.buffer_words
            base = buffer_base + (int(si0[fill]) if c.write.runtime_base else 0)
            take = min(n_w, n_in - used)
            found = writes.get((base, take))
            if found is None:
                found = writes[(base, take)] = self._write(base + w_rel[:take], distinct)
            rows, index, bad = found
            ops.append((True, index, rows + used))
            errors += bad
            used += take
            if take < n_w:
                break
            load = max(w_end, released[fill - c.buffers] if fill >= c.buffers else 0)
            w_end = load + n_w

            for _ in range(rpf):
                if reads_stopped:
                    break
                if (c.read_passes and read_passes >= c.read_passes) or \
                        (c.read.runtime_base and read_passes >= si1.size):
                    reads_stopped = True
                    break
                base = buffer_base + (int(si1[read_passes]) if c.read.runtime_base else 0)
                found = reads.get(base)
                if found is None:
                    found = reads[base] = self._read(base + r_rel)
                index, valid, bad = found
                if ops and not ops[-1][0]:
                    _, before, was = ops.pop()
                    ones = lambda v, k: np.ones((k, 1), bool) if v is None else v
                    valid = None if was is None and valid is None else \
                        np.concatenate([ones(was, len(before)), ones(valid, len(index))])
                    index = np.concatenate([before, index])
                ops.append((False, index, valid))
                lasts.append(r_last)
                errors += bad
                load = max(r_end, w_end)
                r_end = load + n_r
                read_passes += 1
            else:
                released.append(r_end)
            fill += 1

        last = np.concatenate(lasts) if lasts else np.zeros(0, dtype=bool)
        cycles = r_end + READ_LATENCY + 1 if read_passes else w_end + 1 if fill else 0
        return ops, last, errors, cycles, fill, read_passes
