"""Bitstream packing and checking (sw/bitstream.py), its CRC, and the loader's constructor checks."""

import gc
import re
import zlib

import numpy as np
import pytest
from amaranth import Shape, unsigned
from amaranth.back import verilog
from amaranth.lib.crc import catalog
from amaranth.sim import Simulator
from hypothesis import given, settings, strategies as st

from facts import bitstream as facts_bitstream
from hw.tile import config
from sw import bitstream
from sw.bitstream import BitstreamError, Reason

EXPECTED = {0: 5, 1: 32, 2: 33, 17: 100, 258: 257}
words32 = st.lists(st.integers(0, 0xFFFF_FFFF), max_size=40)


@st.composite
def segments(draw, expected=EXPECTED):
    units = draw(st.lists(st.sampled_from(sorted(expected)), min_size=1, unique=True))
    return {u: (draw(st.integers(0, (1 << expected[u]) - 1)), expected[u]) for u in units}


def good(units=(1, 17, 2, 258, 0)):
    return bitstream.pack({u: ((1 << EXPECTED[u]) - 3, EXPECTED[u]) for u in units})


def refused(words, **kwargs):
    with pytest.raises(BitstreamError) as info:
        bitstream.unpack(words, expected=EXPECTED, **kwargs)
    assert f"at word {info.value.index}" in str(info.value)
    return info.value.reason, info.value.index


@given(words32)
def test_crc_is_zlib_of_little_endian_bytes(words):
    data = b"".join(w.to_bytes(4, "little") for w in words)
    assert bitstream.crc32(words) == zlib.crc32(data)
    assert catalog.CRC32_ISO_HDLC(32).compute(words) == zlib.crc32(data)


def test_hardware_crc_processor_matches_zlib():
    """The Amaranth CRC block the loader instantiates, fed one word per cycle."""
    words = good()[:-1]
    crc = catalog.CRC32_ISO_HDLC(32).create()
    seen = []

    async def bench(ctx):
        for k, w in enumerate(words):
            ctx.set(crc.start, k == 0)
            ctx.set(crc.valid, 1)
            ctx.set(crc.data, w)
            await ctx.tick()
        ctx.set(crc.valid, 0)
        seen.append(ctx.get(crc.crc))

    sim = Simulator(crc)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [zlib.crc32(bitstream.to_bytes(words))] == [good()[-1]]


def test_status_codes_and_magic_match_hardware():
    for reason in Reason:
        assert config.Status[reason.name].value == reason.value
    assert config.Status is Reason is facts_bitstream.Status  # one enum shared, not two kept equal
    status = config.ConfigLoader(EXPECTED, version=bitstream.VERSION).signature.members["status"]
    assert status.shape is Reason and Shape.cast(status.shape) == unsigned(4)  # the 4-bit config_status register
    assert config.MAGIC == bitstream.MAGIC == 0x5244_5530
    assert bitstream.to_bytes([bitstream.MAGIC])[::-1] == b"RDU0"


@settings(max_examples=200)
@given(segments())
def test_round_trip(segs):
    words = bitstream.pack(segs)
    assert len(words) == words[3] == 5 + sum(1 + (w + 31) // 32 for _, w in segs.values())
    assert words[:3] == [bitstream.MAGIC, bitstream.VERSION, len(segs)]
    got = bitstream.unpack(words, expected=EXPECTED)
    assert got == {u: v for u, (v, _) in segs.items()}
    assert list(got) == list(segs)
    assert bitstream.from_bytes(bitstream.to_bytes(words)) == words
    assert bitstream.load_cycles(words) == len(words)


def test_layout_least_significant_word_first():
    words = bitstream.pack({17: (0x1_2222_2222_3333_3333_4444_4444, 100)}, version=7)
    assert words[:4] == [bitstream.MAGIC, 7, 1, 10]
    assert words[4:9] == [17 << 16 | 4, 0x4444_4444, 0x3333_3333, 0x2222_2222, 1]
    assert words[9] == zlib.crc32(bitstream.to_bytes(words[:9]))
    assert bitstream.unpack(words, expected=EXPECTED, version=7) == {17: 0x1_2222_2222_3333_3333_4444_4444}


@pytest.mark.parametrize("segs, what", [
    ({0: (32, 5)}, "does not fit"),
    ({0: (-1, 5)}, "does not fit"),
    ({1 << 16: (0, 5)}, "unit id"),
    ({0: (0, 0)}, "width"),
    ({0: (0, 32 * 0xFFFF + 1)}, "width"),
    ({}, "at least one segment"),
])
def test_pack_refuses(segs, what):
    with pytest.raises(ValueError, match=what):
        bitstream.pack(segs)


def test_pack_refuses_bad_version_and_from_bytes_partial_word():
    with pytest.raises(ValueError, match="version"):
        bitstream.pack({0: (1, 5)}, version=1 << 16)
    with pytest.raises(ValueError, match="whole 32-bit words"):
        bitstream.from_bytes(b"\0" * 7)


def edited(index, value, words=None):
    words = list(good() if words is None else words)
    words[index] = value(words[index]) if callable(value) else value
    return words


# Segments of good() in the order [1, 17, 2, 258, 0]: headers at 4, 6, 11, 14, 24; CRC at 26.
@pytest.mark.parametrize("words, reason, index", [
    (edited(0, 0x5244_5531), Reason.BAD_MAGIC, 0),
    (edited(1, 2), Reason.BAD_VERSION, 1),
    (edited(1, 1 | 1 << 16), Reason.BAD_VERSION, 1),
    (edited(2, 0), Reason.BAD_LENGTH, 2),
    (edited(2, 6), Reason.BAD_LENGTH, 2),
    (edited(3, 14), Reason.BAD_LENGTH, 3),
    (edited(3, 28), Reason.BAD_LENGTH, 3),
    (edited(3, 26)[:26], Reason.BAD_LENGTH, 24),
    (edited(6, 17 << 16 | 5), Reason.BAD_LENGTH, 6),
    (edited(10, lambda w: w | 1 << 4), Reason.BAD_LENGTH, 10),
    (edited(3, 14, bitstream.pack({1: (0, 32), 0: (0, 5)})) + [0] * 5, Reason.BAD_LENGTH, 8),
    (good() + [0], Reason.BAD_LENGTH, 27),
    (edited(11, 3 << 16 | 2), Reason.BAD_UNIT, 11),
    (edited(24, 1 << 16 | 1), Reason.BAD_UNIT, 24),
    (edited(7, lambda w: w ^ 1), Reason.BAD_CHECKSUM, 26),
    (edited(26, lambda w: w ^ 1 << 31), Reason.BAD_CHECKSUM, 26),
    (good()[:20], Reason.TRUNCATED, 20),
    ([], Reason.TRUNCATED, 0),
])
def test_every_reason(words, reason, index):
    assert refused(words) == (reason, index)


def test_version_is_the_loaders():
    words = bitstream.pack({0: (3, 5)}, version=9)
    assert refused(words)[0] == Reason.BAD_VERSION
    assert bitstream.unpack(words, expected=EXPECTED, version=9) == {0: 3}


@settings(max_examples=200)
@given(segments(), st.data())
def test_any_flipped_value_bit_is_a_checksum_error(segs, data):
    words = bitstream.pack(segs)
    k = 4
    bits = []
    for u, (_, width) in segs.items():
        bits += [(k + 1 + b // 32, b % 32) for b in range(width)]
        k += 1 + (width + 31) // 32
    index, bit = data.draw(st.sampled_from(bits))
    words[index] ^= 1 << bit
    assert refused(words) == (Reason.BAD_CHECKSUM, len(words) - 1)


@given(segments(), st.data())
def test_every_prefix_is_truncated(segs, data):
    words = bitstream.pack(segs)
    cut = data.draw(st.integers(0, len(words) - 1))
    assert refused(words[:cut]) == (Reason.TRUNCATED, cut)


def test_load_cycles_checks_the_header():
    assert bitstream.load_cycles(good()) == 27
    with pytest.raises(BitstreamError) as info:
        bitstream.load_cycles(good()[:-1])
    assert info.value.reason == Reason.TRUNCATED
    with pytest.raises(BitstreamError) as info:
        bitstream.load_cycles(edited(0, 0))
    assert info.value.reason == Reason.BAD_MAGIC


# A refused constructor never gets elaborated; that is the point here.
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("targets, kwargs, what", [
    ({}, {}, "non-empty"),
    ({-1: 5}, {}, "unit id"),
    ({1 << 16: 5}, {}, "unit id"),
    ({0: 0}, {}, "width"),
    ({0: True}, {}, "width"),
    ({0: 5}, {"version": 1 << 16}, "version"),
    ({0: 5}, {"timeout": 0}, "timeout"),
])
def test_loader_refuses_bad_arguments(targets, kwargs, what):
    with pytest.raises(ValueError, match=what):
        config.ConfigLoader(targets, **{"version": 1, **kwargs})
    gc.collect()


def test_loader_ports():
    from amaranth.lib import data

    layout = data.StructLayout({"a": 3, "b": 40})
    loader = config.ConfigLoader({3: 7, 9: layout}, version=1)
    assert len(loader.active(3)) == 7
    assert isinstance(loader.active(9), data.View) and loader.targets[9] == 43
    assert loader.max_total == 4 + 2 + 3 + 1
    with pytest.raises(ValueError, match="no unit 4"):
        loader.active(4)
    text = verilog.convert(loader, name="top", emit_src=False)
    assert "cfg_3" in text and "cfg_9" in text and "shadow_9" in text


@pytest.mark.parametrize("bad, error, what", [
    (lambda w: w[0] + 0.7, TypeError, r"word 0 is 1380209968\.7 \(float\), not an integer"),
    (lambda w: float(w[0]), TypeError, r"word 0 is .* \(float\)"),
    (lambda w: np.float32(1.0), TypeError, r"word 0 is .* \(float32\)"),
    (lambda w: str(w[0]), TypeError, r"word 0 is '\d+' \(str\)"),
    (lambda w: True, TypeError, r"word 0 is True \(bool\)"),
    (lambda w: np.bool_(True), TypeError, r"word 0 is .* \(bool"),
    (lambda w: -1, ValueError, r"word 0 is -0x1, not a 32-bit word"),
    (lambda w: 1 << 32, ValueError, r"word 0 is 0x100000000, not a 32-bit word"),
])
def test_non_integer_and_out_of_range_words_are_named(bad, error, what):
    words = good()
    words[0] = bad(words)
    for call in (lambda: bitstream.unpack(words, expected=EXPECTED), lambda: bitstream.load_cycles(words),
                 lambda: bitstream.to_bytes(words)):
        with pytest.raises(error, match=what):
            call()
    later = good()
    later[9] = bad(later)
    with pytest.raises(error, match="word 9 is"):
        bitstream.unpack(later, expected=EXPECTED)


def test_numpy_integer_words_and_values_are_integers():
    words = good()
    assert bitstream.unpack(np.asarray(words, np.uint32), expected=EXPECTED) == bitstream.unpack(words,
                                                                                                  expected=EXPECTED)
    assert bitstream.pack({0: (np.int64(3), 5)}) == bitstream.pack({0: (3, 5)})


@pytest.mark.parametrize("value", [True, 1.0, 2.5, "1", np.float64(1.0), None])
def test_pack_refuses_a_value_that_is_not_an_integer(value):
    with pytest.raises(TypeError, match=re.escape(f"value {value!r} of unit 0 is a")):
        bitstream.pack({0: (value, 5)})
