# amaranth: UnusedElaboratable=no
from fractions import Fraction

import pytest

from hw.mem import params
from hw.mem.controller import MemController
from hw.mem.params import MemParams, TierParams


def test_config_m_keeps_the_spec_ratios():
    p = params.DEFAULT
    assert p.hbm.bytes_per_cycle / p.ddr.bytes_per_cycle == 8
    assert p.ddr.capacity // p.hbm.capacity == 32
    assert p.ddr.bytes_per_cycle / p.host_bytes_per_cycle == 15
    assert Fraction(p.ddr.latency, p.hbm.latency) == Fraction(3, 2)
    assert p.addr_bits == 31


@pytest.mark.parametrize("change, message", [
    (dict(capacity=3 << 20), "capacity must be a power of two"),
    (dict(channels=0), r"channels must be an integer in \[1, 64\]"),
    (dict(channel_bytes_per_cycle=0), "must be positive"),
    (dict(channel_bytes_per_cycle="fast"), "bytes per cycle"),
    (dict(name="sram"), "must be one of"),
])
def test_tier_params_reject_bad_values(change, message):
    base = dict(name="hbm", capacity=1 << 20, channels=2, channel_bytes_per_cycle=8, latency=20)
    with pytest.raises(ValueError, match=message):
        TierParams(**{**base, **change})


def test_mem_params_reject_a_tier_faster_than_one_word_per_cycle():
    fast = TierParams("hbm", capacity=1 << 20, channels=4, channel_bytes_per_cycle=8, latency=20)
    with pytest.raises(ValueError, match="hbm: 32 B/cycle exceeds one 16-byte TLN word"):
        MemParams(hbm=fast, ddr=params.SMALL.ddr)


def test_controller_rejects_latency_below_its_pipeline():
    tier = TierParams("hbm", capacity=1 << 20, channels=1, channel_bytes_per_cycle=8, latency=2)
    with pytest.raises(ValueError, match="latency 2 is below"):
        MemController(tier, tier_index=params.HBM, word_bytes=16, addr_bits=21, tag_bits=2)
    with pytest.raises(ValueError, match="does not name the hbm tier"):
        MemController(params.SMALL.hbm, tier_index=params.DDR, word_bytes=16, addr_bits=24, tag_bits=2)
