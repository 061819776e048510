"""Launch lists: the kernels of a decode step as records the chip's sequencer walks (``hw/mem/launch_list.py``).

With ``--orchestration chip`` the host writes one list per context bucket
into HBM once, and each step is one command: the sequencer reads the list
and, for each entry, does Program Load (skipped when the program is
resident), Argument Load (the AGCU patterns with bases stepped by the step's
token and position) and Execute, with no host round trip between kernels.

:func:`encode` turns :class:`ListEntry` records into the list's words and
:func:`decode` reads them back (the fast model's sequencer walks decoded
lists; a malformed list raises :class:`~sw.errors.ChipError` naming the entry).
"""

from dataclasses import dataclass, field

import numpy as np
from amaranth import Shape

from hw.mem.launch_list import (MAX_AGCUS, WORD_BITS, direction_record_layout, header_layout,
                                program_record_layout, record_words)
from sw.errors import ChipError
from sw.layout import pack, unpack
from sw.loopnest import LoopNest, agcu_last_level
from sw.runtime.chip import Pattern, gate_problem


@dataclass(frozen=True)
class ListDirection:
    """One AGCU direction of an entry: its pattern at token 0 and position 0, and the byte steps of its base."""

    pattern: Pattern
    token_stride: int = 0
    pos_stride: int = 0

    def at(self, token, pos):
        """The pattern of the step for ``token`` at ``pos``."""
        p = self.pattern
        return p.moved(p.base + token * self.token_stride + pos * self.pos_stride)


@dataclass(frozen=True)
class ListEntry:
    """One kernel: its Program Load pattern (None: the program already loaded) and AGCU directions by index."""

    program: Pattern | None
    reads: dict = field(default_factory=dict)
    writes: dict = field(default_factory=dict)

    @property
    def enable(self):
        """The ``kernel_enable`` bits of the entry."""
        return sum(1 << (2 * k) for k in self.reads) + sum(1 << (2 * k + 1) for k in self.writes)

    def patterns(self, token, pos):
        """``(reads, writes)`` of the step for ``token`` at ``pos``, as ``Device.execute`` takes them."""
        return ({k: d.at(token, pos) for k, d in self.reads.items()},
                {k: d.at(token, pos) for k, d in self.writes.items()})


def _words(value, n):
    return [(value >> (WORD_BITS * i)) & 0xFFFF_FFFF for i in range(n)]


def _value(words):
    return sum(int(w) << (WORD_BITS * i) for i, w in enumerate(words))


def program_pattern(tier, offset, nwords, word_bytes):
    """The Program Load pattern of a bitstream of ``nwords`` 32-bit words at byte ``offset``, padded to TLN words."""
    return Pattern.linear(tier, offset, -(-4 * nwords // word_bytes))


def encode(entries, mem_params, n_agcus):
    """The words of a launch list (uint32 array, zero-padded to whole TLN words).

    Raises ``ValueError`` for an entry no sequencer can run: no entries, an
    AGCU index outside ``n_agcus``, a read waiting for a write the entry does
    not run, a stride or base that does not fit its field.
    """
    if not entries:
        raise ValueError("a launch list needs at least one entry")
    if not 1 <= n_agcus <= MAX_AGCUS:
        raise ValueError(f"a launch list addresses 1 to {MAX_AGCUS} AGCUs, not {n_agcus}")
    header, prog, direction = header_layout(), program_record_layout(mem_params), direction_record_layout(mem_params)
    wb = mem_params.word_bytes
    out = []
    for i, entry in enumerate(entries):
        for k in (*entry.reads, *entry.writes):
            if not 0 <= k < n_agcus:
                raise ValueError(f"launch list entry {i}: AGCU {k} does not exist (the chip has {n_agcus})")
        for k, d in entry.reads.items():
            problem = d.pattern.after is not None and \
                gate_problem(d.pattern, {j: w.pattern for j, w in entry.writes.items()})
            if problem:
                raise ValueError(f"launch list entry {i}: AGCU {k}'s read {problem}")
        out += _words(pack(header, {"enable": entry.enable, "program": int(entry.program is not None),
                                    "final": int(i == len(entries) - 1)}), record_words(header))
        if entry.program is not None:
            try:
                out += _words(pack(prog, entry.program.fields(wb)), record_words(prog))
            except ValueError as e:
                raise ValueError(f"launch list entry {i}, program record: {e}") from None
        for k in range(n_agcus):
            for directions in (entry.reads, entry.writes):
                if k in directions:
                    d = directions[k]
                    try:
                        value = pack(direction, {"transfer": d.pattern.fields(wb), "token_stride": d.token_stride,
                                                 "pos_stride": d.pos_stride})
                    except ValueError as e:
                        raise ValueError(f"launch list entry {i}, AGCU {k}: {e}") from None
                    out += _words(value, record_words(direction))
    words = np.array(out, dtype=np.uint32)
    per_tln = wb // 4
    return np.concatenate([words, np.zeros(-words.size % per_tln, np.uint32)])


def _signed(value, bits):
    return value - (1 << bits) if value >> (bits - 1) else value


def _transfer_pattern(layout, value):
    """The Pattern of a ``transfer_layout`` record in the low bits of ``value``."""
    fields, inner = unpack(layout, value), dict(layout)
    levels = {}
    for name in ("counts", "strides"):
        elems = inner[name].shape
        shape = Shape.cast(elems.elem_shape)
        raw = value >> inner[name].offset
        levels[name] = [(raw >> (shape.width * i)) & ((1 << shape.width) - 1) for i in range(elems.length)]
        if shape.signed:
            levels[name] = [_signed(v, shape.width) for v in levels[name]]
    nest = LoopNest(levels["counts"], levels["strides"], last_level=agcu_last_level(fields["last_every"]))
    after = fields["after"] - 1 if fields["after"] else None
    lag = fields["lag"] if after is not None else 0         # an ungated read ignores its lag
    return Pattern(fields["tier"], fields["base"], nest, bool(fields["bf16"]), after, lag)


def decode(words, mem_params, n_agcus):
    """The :class:`ListEntry` records of a list's words, up to its final entry.

    Raises :class:`~sw.errors.ChipError` naming the entry when the words end
    before a final entry or an entry enables an AGCU the chip lacks.
    """
    words = np.asarray(words, dtype=np.uint32)
    header, prog, direction = header_layout(), program_record_layout(mem_params), direction_record_layout(mem_params)
    transfer = dict(direction)["transfer"].shape
    hw_, pw, dw = record_words(header), record_words(prog), record_words(direction)
    entries, at = [], 0

    def take(n, what):
        nonlocal at
        if at + n > words.size:
            raise ChipError(f"launch list entry {len(entries)}: the list ends inside its {what} "
                            f"(word {at} of {words.size}); no entry is marked final")
        chunk = words[at:at + n]
        at += n
        return _value(chunk)

    while True:
        h = unpack(header, take(hw_, "header"))
        enable = h["enable"]
        if enable >> (2 * n_agcus):
            raise ChipError(f"launch list entry {len(entries)}: enable {enable:#x} names AGCUs beyond the "
                            f"chip's {n_agcus}")
        program = _transfer_pattern(prog, take(pw, "program record")) if h["program"] else None
        reads, writes = {}, {}
        for k in range(n_agcus):
            for bit, directions in ((2 * k, reads), (2 * k + 1, writes)):
                if enable >> bit & 1:
                    value = take(dw, f"AGCU {k} record")
                    fields = unpack(direction, value)
                    t = _transfer_pattern(transfer, value)
                    directions[k] = ListDirection(t, _signed(fields["token_stride"], WORD_BITS),
                                                  _signed(fields["pos_stride"], WORD_BITS))
        entries.append(ListEntry(program, reads, writes))
        if h["final"]:
            return entries
