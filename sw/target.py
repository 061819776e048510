"""Chip configurations the compiler targets and the runtime drives: one description per chip.

A :class:`Target` holds what :class:`hw.chip.Chip` is built from (array and
memory parameters, AGCU positions, PCU functions) and the nominal clock that
turns cycles into seconds. The compiler maps onto it, the fast model runs
it, and the co-simulation builds it, so the three agree on every size.
"""

from dataclasses import dataclass

from hw.chip import all_io_positions
from hw.mem.params import MemParams, TierParams
from hw.tile.params import ArrayParams
from hw.tile.pcu import TailOp

MiB = 1 << 20

DECODE_TAIL = (TailOp.EXP, TailOp.SILU)
DECODE_POST = (TailOp.RECIP, TailOp.RSQRT)


@dataclass(frozen=True)
class Target:
    """One chip: ``array``, ``memory``, ``agcus`` (I/O positions), PCU ``tail_ops`` / ``post_ops``.

    ``clock_hz`` is the nominal clock for simulated tokens per second.
    ``host_launch_cycles`` is what one kernel launch issued by the host costs
    beyond its Program Load and execution: the host's round trip to write the
    launch registers and see the done interrupt (the spec's 2,000-10,000
    cycle range for software-orchestrated launches; we take its low end).
    """

    name: str
    array: ArrayParams
    memory: MemParams
    tail_ops: tuple[TailOp, ...] = DECODE_TAIL
    post_ops: tuple[TailOp, ...] = DECODE_POST
    clock_hz: float = 1.0e9
    host_launch_cycles: int = 2000

    @property
    def agcus(self):
        return all_io_positions(self.array)

    def chip(self):
        """The :class:`hw.chip.Chip` of this target (imports the RTL only when asked)."""
        from hw.chip import Chip

        return Chip(self.array, self.memory, agcus=self.agcus, pcu_tail_ops=self.tail_ops,
                    pcu_post_ops=self.post_ops)

    def describe(self):
        a, m = self.array, self.memory
        return (f"{self.name}: {a.rows}x{a.cols} tiles ({a.rows * a.cols // 2} PCUs of {a.lanes} lanes x "
                f"{a.stages} stages, {a.rows * a.cols // 2} PMUs of {a.pmu_words * 4 // 1024} KiB), "
                f"HBM {m.hbm.capacity // MiB} MiB at {float(m.hbm.bytes_per_cycle):g} B/cycle, "
                f"DDR {m.ddr.capacity // MiB} MiB at {float(m.ddr.bytes_per_cycle):g} B/cycle")


# The co-simulated chip of `make decode` and the tests: small enough to build in minutes, PMUs large enough
# to hold a 256-position attention block of the default model.
CHIP = Target(
    "chip",
    ArrayParams(rows=2, cols=4, lanes=4, stages=2, pmu_bank_words=2048),
    MemParams(hbm=TierParams("hbm", capacity=16 * MiB, channels=2, channel_bytes_per_cycle=8, latency=24),
              ddr=TierParams("ddr", capacity=64 * MiB, channels=1, channel_bytes_per_cycle=2, latency=36)),
)

# The default 4x8 array (16 PCUs of 8 lanes x 4 stages) with 32 KiB PMUs and config-M-like memory: for the
# fast model and benchmarks (its Verilator build takes over ten minutes).
LARGE = Target(
    "4x8",
    ArrayParams(rows=4, cols=8, lanes=8, stages=4, pmu_bank_words=1024),
    MemParams(hbm=TierParams("hbm", capacity=32 * MiB, channels=2, channel_bytes_per_cycle=8, latency=150,
                             queue_depth=16),
              ddr=TierParams("ddr", capacity=1024 * MiB, channels=1, channel_bytes_per_cycle=2, latency=225,
                             queue_depth=16),
              agcus=4, agcu_outstanding=256, copy_outstanding=256),
)

TARGETS = {t.name: t for t in (CHIP, LARGE)}
