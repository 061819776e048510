"""Kernel launches: the AGCU transfers (streams) of a kernel and the kernel with its program."""

from dataclasses import dataclass

from sw.compiler.ops import ChipOp
from sw.errors import CompileError
from sw.loopnest import LoopNest
from sw.runtime.chip import Pattern
from sw.tile.kernel import Program


@dataclass(frozen=True)
class Stream:
    """One AGCU transfer of a launch; its base moves with the token and the position.

    ``base(token, pos) = region offset + offset + token * token_stride + pos * pos_stride`` (bytes);
    ``nest`` in TLN words from that base, as :class:`sw.runtime.chip.Pattern` takes it. ``after`` (reads):
    the AGCU of the kernel's write stream this read waits for (it reads what that write stores), or None;
    ``lag`` (0 or 1): the write's top-level iterations the read's iteration ``i`` waits for are ``0 .. i - lag``
    (:class:`sw.runtime.chip.Pattern`).
    """

    agcu: int
    direction: str
    region: str
    tier: int
    offset: int
    nest: LoopNest
    pos_stride: int = 0
    token_stride: int = 0
    bf16: bool = False
    after: int | None = None
    lag: int = 0

    def pattern(self, token, pos):
        return Pattern(self.tier, self.offset + token * self.token_stride + pos * self.pos_stride, self.nest,
                       self.bf16, self.after, self.lag)

    @property
    def words(self):
        return self.nest.count


@dataclass
class Launch:
    """One kernel of a decode step: its program, the chip ops it runs and its AGCU transfers."""

    name: str
    ops: list[ChipOp]
    program: Program
    streams: list[Stream]
    program_region: str = ""

    def patterns(self, token, pos):
        reads = {s.agcu: s.pattern(token, pos) for s in self.streams if s.direction == "read"}
        writes = {s.agcu: s.pattern(token, pos) for s in self.streams if s.direction == "write"}
        return reads, writes

    def units(self):
        kinds = [u.kind for u in self.program.units.values()]
        return kinds.count("pcu"), kinds.count("pmu")


def linear(words):
    """Counts and strides of ``words`` consecutive words (two levels past the 16-bit count)."""
    if words < 1 << 16:
        return (words,), (1,)
    for inner in range(1 << 15, 0, -1):
        if words % inner == 0 and words // inner < 1 << 16:
            return (inner, words // inner), (1, inner)
    raise CompileError(f"a stream of {words} words cannot be split into two 16-bit loop counts")
