"""Host-side driver of the chip's registers (hw/chip.py): program load, argument load, execute, copies.

The driver is async and talks to the chip through a small bus object, so the
same code drives the Verilator co-simulation (AXI4-Lite through
:class:`cosim.axil.AxiLiteHost`, waiting on the chip's done lines) and any
other backend that offers the same three calls:

- ``await bus.read32(offset)`` and ``await bus.write32(offset, value)``,
  each raising :class:`ChipError` for an access the chip refuses;
- ``await bus.wait_for(event)`` with ``event`` one of ``"kernel_done"``,
  ``"program_done"``, ``"copy_done"``, ``"seq_done"``: return once that line
  is high, or raise ``TimeoutError`` when it stays low past the bus's cycle
  limit.

A bus may also have ``resets``, a number that changes whenever the chip's
reset does (rises or falls). The driver then does not write a word of an
``rw`` register again with the value it wrote there since the count last
changed: such a register holds what the host last wrote until a reset
(:class:`hw.mem.csr.CsrBank`), and a launch rewrites most of its pattern
words with the values they hold (about three fifths of a decode's register
writes, each several simulated cycles of bus handshakes). This assumes the
driver is the only writer on its bus. ``write32`` may return ``False`` for a
write the chip did not take (issued in reset, or cut off by one); the driver
then does not count it as written.
"""

from dataclasses import dataclass

import numpy as np

from hw.chip import chip_registers
from hw.mem.agcu import PEERS, direction_status_layout, transfer_layout
from hw.mem.controller import stats_layout
from hw.mem.copy import copy_config_layout, copy_status_layout
from hw.mem.csr import RegisterMap
from hw.mem.sequencer import Cause, Phase, sequencer_status_layout
from hw.tile.config import Status
from sw.layout import pack, unpack
from sw.loopnest import LoopNest, agcu_last_every


KERNEL_ERROR = 0b100        # kernel_status: busy, done, error
PHASES = {Phase.FETCH: "fetching its records", Phase.PROGRAM: "loading its program", Phase.EXECUTE: "executing",
          Phase.DRAIN: "draining the list"}


from sw.errors import ChipError  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class Pattern:
    """One AGCU transfer: the words of a :class:`~sw.loopnest.LoopNest` in TLN words from byte ``base`` of ``tier``.

    The transfer visits ``base + a * word_bytes`` for each address ``a`` of
    ``nest``, in order; a read marks ``last`` on the vectors the nest's
    ``last_level`` marks and always on the final one. ``bf16`` (reads) widens
    each word's bf16 values to fp32 lanes: two words of vectors per memory word.
    ``after`` (reads): the index of the AGCU whose write, in the same kernel, the
    read waits for (so it reads what that write stored); None to start at once.
    ``lag`` (reads with ``after``, 0 or 1): the read's top-level iteration ``i``
    (the nest's outermost level, :meth:`iterations` of them) starts once the
    write has completed, every word acknowledged, its top-level iterations
    ``0 .. i - lag`` (none when ``i - lag < 0``), or all of them. Lag 0 with an
    unlooped write is a wait for the whole write; lag 1 carries a value from
    one iteration of a looped kernel to the next (see ``hw.mem.agcu.Agcu``).
    """

    tier: int
    base: int
    nest: LoopNest
    bf16: bool = False
    after: int | None = None
    lag: int = 0

    def __post_init__(self):
        if not isinstance(self.nest, LoopNest):
            raise ValueError(f"pattern.nest must be a LoopNest, not {self.nest!r}")
        self.nest.check("pattern")
        if self.after is not None and (not isinstance(self.after, int) or isinstance(self.after, bool)
                                       or not 0 <= self.after < PEERS):
            raise ValueError(f"pattern.after must be None or an AGCU index in [0, {PEERS}), not {self.after!r}")
        if self.lag not in (0, 1) or isinstance(self.lag, bool):
            raise ValueError(f"pattern.lag must be 0 or 1, not {self.lag!r}")
        if self.lag and self.after is None:
            raise ValueError("pattern.lag 1 needs pattern.after: the lag counts a write's iterations")

    def moved(self, base):
        """This pattern from byte ``base`` instead: the same nest, gate and widening, not checked again.

        The runtime builds a launch's patterns once and moves their bases every step
        (:meth:`sw.runtime.decode.Session._patterns`); a pattern equal to ``Pattern(tier, base, nest, ...)``.
        """
        out = object.__new__(Pattern)
        out.__dict__.update(self.__dict__)
        out.__dict__["base"] = base
        return out

    @classmethod
    def linear(cls, tier, base, words, **kwargs):
        """``words`` consecutive words from ``base``."""
        return cls(tier, base, LoopNest.linear(words), **kwargs)

    @property
    def words(self):
        return self.nest.count

    @property
    def iterations(self):
        """Iterations of the outermost level (``LEVELS - 1``): what a gate (``after``, ``lag``) counts."""
        return self.nest.padded()[0][-1]

    def fields(self, word_bytes):
        """The AGCU's ``transfer_layout`` record as a dict."""
        bounds, strides = self.nest.padded()
        return dict(tier=self.tier, base=self.base + self.nest.offset * word_bytes,
                    last_every=agcu_last_every(self.nest.last_level), bf16=int(self.bf16),
                    counts=list(bounds), strides=list(strides), after=0 if self.after is None else self.after + 1,
                    lag=self.lag)


def gate_problem(read, writes):
    """Why a gated ``read`` (a :class:`Pattern` with ``after``) could not run beside ``writes`` (AGCU ->
    Pattern), or "": the write it waits for is not run (it would never start), or the two count different
    top-level iterations while the write has more than one (iteration i would wait for the wrong pass)."""
    write = writes.get(read.after)
    if write is None:
        return f"waits for AGCU {read.after}'s write, which this kernel does not run: the read would never start"
    if write.iterations not in (1, read.iterations):
        return (f"runs {read.iterations} top-level iterations gated on AGCU {read.after}'s write of "
                f"{write.iterations}: a gate pairs the read's iteration i with the write's")
    return ""


def gate_wait(read, read_words, write, write_words):
    """What a gated read that is not done waits for, for a stall report ("" when its gate is open).

    ``read_words`` / ``write_words``: the words each direction's status counts (``words``). A read
    requests an iteration's words only when its gate allows and the tier answers in order, so a read held
    by its gate has all words of its earlier iterations: it waits to begin iteration ``read_words //
    words per iteration``; the write has completed ``write_words // words per iteration`` of its own.
    """
    if not read.words or not write.words:
        return ""
    i = read_words // (read.words // read.iterations)
    need = i - read.lag
    complete = write_words // (write.words // write.iterations)
    if i >= read.iterations or need < 0 or complete > need:
        return ""
    if read.iterations == write.iterations == 1:
        return f", waiting for AGCU {read.after}'s write"
    return (f", waiting for AGCU {read.after}'s write to complete iteration {need} ({complete} of "
            f"{write.iterations} complete) before iteration {i} of {read.iterations}")


def stream_pattern(tier, base, last, *, lanes, word_bytes):
    """A contiguous pattern that delivers ``len(last)`` vectors with ``last`` set where ``last`` says.

    The flags must be periodic (a group of ``p`` vectors, ``last`` on each
    group's final vector) or set on the final vector only: what one nest's
    ``last_level`` can express.
    """
    last = np.asarray(last, dtype=bool)
    n = last.size
    if n == 0 or not last[-1]:
        raise ValueError("a stream's final vector must carry last")
    vector_words = 4 * lanes / word_bytes
    words = int(np.ceil(n * vector_words))
    if last.sum() == 1:
        return Pattern.linear(tier, base, words)
    period = int(np.flatnonzero(last)[0]) + 1
    if n % period or not np.array_equal(last, np.tile(np.arange(period) == period - 1, n // period)):
        raise ValueError(f"last flags at vectors {np.flatnonzero(last)[:8].tolist()} are not one group size; "
                         f"an AGCU marks groups of equal size")
    group_words = period * vector_words
    if group_words != int(group_words):
        raise ValueError(f"a group of {period} vectors is not a whole number of {word_bytes}-byte words")
    return Pattern(tier, base, LoopNest((int(group_words), n // period), (1, int(group_words)), last_level=0))


class ChipDriver:
    """Register-level commands of a :class:`hw.chip.Chip` built with the same parameters.

    Parameters
    ----------
    bus : object with ``read32``, ``write32``, ``wait_for`` (see the module docstring)
    array_params, mem_params, agcus
        As given to the Chip.
    """

    def __init__(self, bus, array_params, mem_params, agcus):
        self.bus = bus
        self.mem_params = mem_params
        self.agcus = tuple(agcus)
        self.map = RegisterMap(chip_registers(array_params, mem_params, self.agcus))
        self.transfer = transfer_layout(mem_params)
        self._base_field = dict(self.transfer)["base"]
        # (tier, nest, bf16, after, lag) -> a transfer record packed with base 0, and the nest's offset in bytes.
        self._transfers = {}
        self.direction_status = direction_status_layout()
        # Byte offset -> the word last written there, for rw registers, since the bus's reset count was _resets.
        self._written, self._resets = {}, None

    def agcu_at(self, side, col):
        try:
            return self.agcus.index((side, col))
        except ValueError:
            raise ChipError(f"no AGCU at I/O position {side}{col}; AGCUs sit at "
                            f"{', '.join(f'{s}{c}' for s, c in self.agcus)}") from None

    def packed_transfer(self, pattern):
        """``pack(self.transfer, pattern.fields(word_bytes))``: an AGCU's ``transfer_layout`` record of ``pattern``.

        Every field but the base is packed once per pattern shape and kept: the runtime launches the same shapes
        every step with only the bases moved. Raises ``ValueError`` as :func:`~sw.layout.pack` does where a field
        does not fit (where the base and another field both do not, the other field is named)."""
        key = (pattern.tier, pattern.nest, pattern.bf16, pattern.after, pattern.lag)
        known = self._transfers.get(key)
        if known is None:
            if len(self._transfers) >= 4096:
                self._transfers.clear()
            fields = pattern.fields(self.mem_params.word_bytes)
            offset = fields["base"] - pattern.base
            fields["base"] = 0
            known = self._transfers[key] = pack(self.transfer, fields), offset
        rest, offset = known
        return rest | pack(self._base_field.shape, pattern.base + offset) << self._base_field.offset

    async def write(self, name, value):
        """Write register ``name``: each of its 32-bit words, least significant first, but the words of an ``rw``
        register that this driver wrote with the same value since the bus's reset count last changed (over a bus
        with ``resets``, see the module's docstring)."""
        reg = self.map.registers[name]
        offset = self.map[name]
        known = reg.access == "rw" and getattr(self.bus, "resets", None) is not None
        for i in range(reg.words):
            at, word = offset + 4 * i, (value >> (32 * i)) & 0xFFFF_FFFF
            if known:
                # Checked at every word: a reset may come during a register's writes.
                if self.bus.resets != self._resets:
                    self._written.clear()
                    self._resets = self.bus.resets
                if self._written.get(at) == word:
                    continue
            taken = await self.bus.write32(at, word)
            # A reset during the write may have come after it: only a write within one reset count is known.
            if known and taken is not False and self.bus.resets == self._resets:
                self._written[at] = word

    async def read(self, name):
        reg = self.map.registers[name]
        offset = self.map[name]
        value = 0
        for i in range(reg.words):
            value |= await self.bus.read32(offset + 4 * i) << (32 * i)
        return value

    async def load_program(self, tier, base, words):
        """Program Load: stream ``words`` 32-bit configuration words from memory into the array.

        Returns the array loader's cycle count; raises :class:`ChipError` if
        the array refuses the bitstream.
        """
        tln_words = -(-4 * words // self.mem_params.word_bytes)
        if tln_words * self.mem_params.word_bytes != 4 * words:
            raise ChipError(f"a program of {words} words does not fill whole {self.mem_params.word_bytes}-byte "
                            f"memory words; pad it with words after the bitstream's end")
        await self.write("program", self.packed_transfer(Pattern.linear(tier, base, tln_words)))
        await self.write("program_start", 1)
        try:
            await self.bus.wait_for("program_done")
        except TimeoutError:
            loader = unpack(self.direction_status, await self.read("program_status"))
            raise ChipError(f"program load stalled after {loader['words']} of {tln_words} memory words "
                            f"(array loader status {Status(await self.read('config_status')).name})") from None
        status = Status(await self.read("config_status"))
        loader = unpack(self.direction_status, await self.read("program_status"))
        if loader["error"]:
            raise ChipError(f"program load: memory refused word {loader['error_word']} of the program at "
                            f"{base:#x}")
        if status != Status.OK:
            raise ChipError(f"program load: the array refused the bitstream ({status.name})")
        return await self.read("config_load_cycles")

    async def execute(self, reads, writes, *, statuses=True):
        """Argument Load then Execute: ``reads`` / ``writes`` map an AGCU index to its :class:`Pattern`.

        Returns ``(kernel cycles, per-AGCU statuses)``; raises :class:`ChipError` on an error response.
        With ``statuses=False`` the per-AGCU statuses are read only when ``kernel_status`` reports an
        error (fewer register reads per launch) and ``{}`` is returned in their place.
        """
        for k, pattern in reads.items():
            problem = pattern.after is not None and gate_problem(pattern, writes)
            if problem:
                side, col = self.agcus[k]
                raise ChipError(f"AGCU {k} ({side}{col}) read {problem}")
        enable = 0
        for k, pattern in reads.items():
            await self.write(f"agcu{k}_read", self.packed_transfer(pattern))
            enable |= 1 << (2 * k)
        for k, pattern in writes.items():
            await self.write(f"agcu{k}_write", self.packed_transfer(pattern))
            enable |= 1 << (2 * k + 1)
        await self.write("kernel_enable", enable)
        await self.write("kernel_start", 1)
        try:
            await self.bus.wait_for("kernel_done")
        except TimeoutError:
            raise ChipError(f"kernel stalled: {await self._progress(reads, writes)}") from None
        cycles = await self.read("kernel_cycles")
        if not statuses and not (await self.read("kernel_status")) & KERNEL_ERROR:
            return cycles, {}
        statuses = {}
        for direction, patterns in (("read", reads), ("write", writes)):
            for k in patterns:
                s = unpack(self.direction_status, await self.read(f"agcu{k}_{direction}_status"))
                statuses[(k, direction)] = s
                if s["error"]:
                    raise ChipError(f"AGCU {k} ({self.agcus[k][0]}{self.agcus[k][1]}) {direction}: memory refused "
                                    f"word {s['error_word']} of its pattern (outside the tier?)")
        return cycles, statuses

    async def _progress(self, reads, writes):
        """Where each enabled AGCU direction stands: for a stall report."""
        parts = []
        status = {(k, d): unpack(self.direction_status, await self.read(f"agcu{k}_{d}_status"))
                  for d, patterns in (("read", reads), ("write", writes)) for k in patterns}
        for direction, patterns in (("read", reads), ("write", writes)):
            for k, pattern in patterns.items():
                s = status[(k, direction)]
                side, col = self.agcus[k]
                state = "done" if s["done"] else f"{s['words']}/{pattern.words} words"
                if not s["done"] and direction == "read" and pattern.after in writes:
                    state += gate_wait(pattern, s["words"], writes[pattern.after],
                                       status[(pattern.after, "write")]["words"])
                parts.append(f"AGCU {k} ({side}{col}) {direction} {state}")
        return "; ".join(parts)

    async def run_list(self, tier, base, tln_words, token, pos, *, entries=None):
        """Walk the launch list of ``tln_words`` memory words at byte ``base`` of ``tier`` on the chip's sequencer.

        Parameters
        ----------
        tier, base, tln_words : int
            Where the list (``sw.runtime.launch_list.encode``) lies, in whole memory words.
        token, pos : int
            The step's token id and position, 0 to 2**32 - 1: each direction's base steps by
            ``token * token_stride + pos * pos_stride`` bytes.
        entries : list of ListEntry, optional
            The list decoded (``launch_list.decode``): a stall report then gives each AGCU's
            words moved out of its pattern's.

        Returns
        -------
        dict of int
            ``cycles`` (start to done), ``kernel_cycles`` (the kernels' sum), ``program_load_cycles``
            (the array loader's cycles of the Program Loads), ``program_loads`` (issued; resident
            programs are skipped) and ``entries`` (kernels completed).

        Raises
        ------
        ChipError
            Naming the entry and the cause: a malformed list, a refused program, an error response;
            or, when ``seq_done`` does not rise within the bus's limit, the entry, its phase and
            each unit's progress.
        """
        for name, value in (("token", token), ("pos", pos)):
            if not 0 <= value < 1 << 32:
                raise ChipError(f"launch list: {name} {value} does not fit the sequencer's 32-bit register")
        await self.write("seq_list", self.packed_transfer(Pattern.linear(tier, base, tln_words)))
        await self.write("seq_token", token)
        await self.write("seq_pos", pos)
        await self.write("seq_start", 1)
        try:
            await self.bus.wait_for("seq_done")
        except TimeoutError:
            status = unpack(sequencer_status_layout(), await self.read("seq_status"))
            raise ChipError(f"sequencer stalled at launch list entry {status['entry']} "
                            f"({PHASES[Phase(status['phase'])]}): "
                            f"{await self._seq_progress(status, tln_words, entries)}") from None
        status = unpack(sequencer_status_layout(), await self.read("seq_status"))
        if status["error"]:
            raise ChipError(f"launch list entry {status['entry']}: {await self._seq_cause(Cause(status['cause']))}")
        return {"cycles": await self.read("seq_cycles"), "kernel_cycles": await self.read("seq_kernel_cycles"),
                "program_load_cycles": await self.read("seq_program_cycles"),
                "program_loads": await self.read("seq_program_loads"), "entries": await self.read("seq_entries")}

    async def _seq_cause(self, cause):
        """Why the sequencer stopped, in words."""
        if cause == Cause.LIST_ENDED:
            return "the list ends before an entry marked final"
        if cause == Cause.BAD_ENABLE:
            return f"its enable names AGCUs beyond the chip's {len(self.agcus)}"
        if cause == Cause.LIST_MEMORY:
            s = unpack(self.direction_status, await self.read("seq_list_status"))
            return f"memory refused word {s['error_word']} of the list (outside the tier?)"
        if cause == Cause.PROGRAM_REFUSED:
            loader = unpack(self.direction_status, await self.read("program_status"))
            if loader["error"]:
                return f"program load: memory refused word {loader['error_word']} of its program"
            return f"program load: the array refused the bitstream ({Status(await self.read('config_status')).name})"
        parts = []
        for k, direction in await self._seq_directions():
            s = unpack(self.direction_status, await self.read(f"agcu{k}_{direction}_status"))
            if s["error"]:
                parts.append(f"AGCU {k} ({self.agcus[k][0]}{self.agcus[k][1]}) {direction}: memory refused word "
                             f"{s['error_word']} of its pattern (outside the tier?)")
        return "; ".join(parts)

    async def _seq_directions(self):
        """``(AGCU, "read" or "write")`` of each direction the latest launched entry enables."""
        enable = await self.read("seq_enable")
        return [(k, d) for k in range(len(self.agcus)) for b, d in ((0, "read"), (1, "write"))
                if enable >> (2 * k + b) & 1]

    async def _seq_progress(self, status, tln_words, entries):
        """Where the units of a stalled sequencer's phase stand."""
        entry = entries[status["entry"]] if entries and status["entry"] < len(entries) else None
        of = lambda total: f"/{total}" if total is not None else ""
        if status["phase"] == Phase.EXECUTE:
            parts = []
            for k, direction in await self._seq_directions():
                s = unpack(self.direction_status, await self.read(f"agcu{k}_{direction}_status"))
                patterns = (entry.reads if direction == "read" else entry.writes) if entry else {}
                total = patterns[k].pattern.words if k in patterns else None
                state = "done" if s["done"] else f"{s['words']}{of(total)} words"
                after = patterns[k].pattern.after if k in patterns else None
                if not s["done"] and after is not None and after in entry.writes:
                    w = unpack(self.direction_status, await self.read(f"agcu{after}_write_status"))
                    state += gate_wait(patterns[k].pattern, s["words"], entry.writes[after].pattern, w["words"])
                parts.append(f"AGCU {k} ({self.agcus[k][0]}{self.agcus[k][1]}) {direction} {state}")
            return "; ".join(parts)
        if status["phase"] == Phase.PROGRAM:
            s = unpack(self.direction_status, await self.read("program_status"))
            total = entry.program.words if entry and entry.program else None
            return (f"program loader {s['words']}{of(total)} words (array loader status "
                    f"{Status(await self.read('config_status')).name})")
        s = unpack(self.direction_status, await self.read("seq_list_status"))
        return f"list reader {s['words']}/{tln_words} words"

    async def start_copy(self, src_tier, src_addr, dst_tier, dst_addr, length):
        """Start a copy-engine transfer; it runs beside kernels. :meth:`wait_copy` collects it."""
        layout = copy_config_layout(self.mem_params)
        await self.write("copy", pack(layout, dict(src_tier=src_tier, src_addr=src_addr, dst_tier=dst_tier,
                                                   dst_addr=dst_addr, length=length)))
        await self.write("copy_start", 1)

    async def wait_copy(self):
        try:
            await self.bus.wait_for("copy_done")
        except TimeoutError:
            status = unpack(copy_status_layout(), await self.read("copy_status"))
            raise ChipError(f"copy stalled after {status['bytes']} bytes") from None
        status = unpack(copy_status_layout(), await self.read("copy_status"))
        if status["error"]:
            raise ChipError(f"copy engine: memory refused address {status['error_addr']:#x}")
        return status

    async def tier_stats(self, name):
        return unpack(stats_layout(self.mem_params.addr_bits), await self.read(f"{name}_stats"))
