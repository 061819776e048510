"""Size, width, bandwidth and latency parameters of the off-chip memory tiers.

Bandwidths are exact fractions of bytes per cycle, so a DDR tier at 2 B/cycle
and a host link at 2/15 B/cycle are both representable. Every tier moves
whole TLN words (``MemParams.word_bytes``); a controller issues at most one
word per cycle, so ``bytes_per_cycle`` may not exceed ``word_bytes``.
"""

from dataclasses import dataclass, field
from fractions import Fraction

HBM, DDR = 0, 1
TIER_NAMES = {HBM: "hbm", DDR: "ddr"}


def _check_int(owner, name, value, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{owner}.{name} must be an integer in [{lo}, {hi}], not {value!r}")


def _fraction(owner, name, value):
    try:
        result = Fraction(value)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}.{name} must be a number of bytes per cycle, not {value!r}") from None
    if result <= 0:
        raise ValueError(f"{owner}.{name} must be positive, not {value!r}")
    return result


@dataclass(frozen=True)
class TierParams:
    """One off-chip tier and its controller.

    Parameters
    ----------
    name : str
        ``"hbm"`` or ``"ddr"``; names the tier in errors and reports.
    capacity : int
        Bytes; a power of two, so the out-of-range check is a bit test.
    channels : int
        Independent channels; their bandwidths add up (see docs/memory.md for
        what the aggregate model leaves out).
    channel_bytes_per_cycle : Fraction
        Peak bytes per cycle of one channel.
    latency : int
        Cycles from a request leaving the queue to its response.
    queue_depth : int
        Requests the controller buffers before it back-pressures.
    """

    name: str
    capacity: int
    channels: int
    channel_bytes_per_cycle: Fraction
    latency: int
    queue_depth: int = 8

    def __post_init__(self):
        owner = f"TierParams({self.name!r})"
        if self.name not in TIER_NAMES.values():
            raise ValueError(f"TierParams.name must be one of {sorted(TIER_NAMES.values())}, not {self.name!r}")
        _check_int(owner, "capacity", self.capacity, 1 << 12, 1 << 40)
        if self.capacity & (self.capacity - 1):
            raise ValueError(f"{owner}.capacity must be a power of two, not {self.capacity}")
        _check_int(owner, "channels", self.channels, 1, 64)
        _check_int(owner, "latency", self.latency, 1, 4096)
        _check_int(owner, "queue_depth", self.queue_depth, 2, 1024)
        object.__setattr__(self, "channel_bytes_per_cycle",
                           _fraction(owner, "channel_bytes_per_cycle", self.channel_bytes_per_cycle))

    @property
    def bytes_per_cycle(self):
        """Peak bandwidth of the whole tier."""
        return self.channels * self.channel_bytes_per_cycle


@dataclass(frozen=True)
class MemParams:
    """The memory system: both tiers, the TLN word, the host link and the AGCUs.

    Parameters
    ----------
    hbm, ddr : TierParams
    word_bytes : int
        Bytes in one TLN word, the unit every controller moves.
    host_bytes_per_cycle : Fraction
        Peak bandwidth of the host link (PCIe-like, below DDR).
    agcus : int
        Address Generation and Coalescing Units on the TLN.
    agcu_outstanding : int
        Read words one AGCU may have in flight; sized to cover the slower
        tier's latency at its bandwidth.
    """

    hbm: TierParams
    ddr: TierParams
    word_bytes: int = 16
    host_bytes_per_cycle: Fraction = Fraction(2, 15)
    agcus: int = 2
    agcu_outstanding: int = 64
    copy_outstanding: int = 64
    tiers: tuple[TierParams, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        _check_int("MemParams", "word_bytes", self.word_bytes, 4, 128)
        if self.word_bytes & (self.word_bytes - 1):
            raise ValueError(f"MemParams.word_bytes must be a power of two, not {self.word_bytes}")
        _check_int("MemParams", "agcus", self.agcus, 1, 16)
        _check_int("MemParams", "agcu_outstanding", self.agcu_outstanding, 2, 4096)
        _check_int("MemParams", "copy_outstanding", self.copy_outstanding, 2, 4096)
        object.__setattr__(self, "host_bytes_per_cycle",
                           _fraction("MemParams", "host_bytes_per_cycle", self.host_bytes_per_cycle))
        if (self.hbm.name, self.ddr.name) != ("hbm", "ddr"):
            raise ValueError(f"MemParams wants an hbm and a ddr tier, not {self.hbm.name!r} and {self.ddr.name!r}")
        for tier in (self.hbm, self.ddr):
            if tier.bytes_per_cycle > self.word_bytes:
                raise ValueError(f"{tier.name}: {tier.bytes_per_cycle} B/cycle exceeds one {self.word_bytes}-byte "
                                 f"TLN word per cycle; widen MemParams.word_bytes")
            if tier.capacity < self.word_bytes:
                raise ValueError(f"{tier.name}: capacity {tier.capacity} is below one TLN word")
        if self.host_bytes_per_cycle > self.word_bytes:
            raise ValueError(f"host link: {self.host_bytes_per_cycle} B/cycle exceeds one TLN word per cycle")
        object.__setattr__(self, "tiers", (self.hbm, self.ddr))

    @property
    def addr_bits(self):
        """Width of a TLN byte address: enough for the larger tier and one bit more,
        so an out-of-range address is representable and can be flagged."""
        return max(t.capacity for t in self.tiers).bit_length()


MiB = 1 << 20

# Unit tests: small tiers and short latencies, the HBM:DDR ratios of config M.
SMALL = MemParams(
    hbm=TierParams("hbm", capacity=1 * MiB, channels=2, channel_bytes_per_cycle=8, latency=24),
    ddr=TierParams("ddr", capacity=8 * MiB, channels=1, channel_bytes_per_cycle=2, latency=36),
)

# Config M of the spec (section 13.5): 32 MiB HBM at 16 B/cycle, 768 MiB of
# DDR (rounded up to a power of two) at 2 B/cycle, latencies 150 and 225, a
# host link at 1/15 of DDR->HBM bandwidth.
DEFAULT = MemParams(
    hbm=TierParams("hbm", capacity=32 * MiB, channels=2, channel_bytes_per_cycle=8, latency=150, queue_depth=16),
    ddr=TierParams("ddr", capacity=1024 * MiB, channels=1, channel_bytes_per_cycle=2, latency=225, queue_depth=16),
    agcus=4, agcu_outstanding=256, copy_outstanding=256,
)
