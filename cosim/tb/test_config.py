"""cocotb testbench for the configuration loader (``hw.tile.config.ConfigLoader``).

Python only drives the word stream; results are read once a bitstream has
been sent. Every refused bitstream is first refused by ``sw.bitstream.unpack``,
and the hardware must give the same reason, after the cycles that the
software's word index implies, with every active configuration unchanged.
"""

import os

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from cosim import components
from cosim.components import start_clock_and_reset
from cosim.tb.units_config import TARGETS, TIMEOUT, VERSION
from sw import bitstream
from sw.bitstream import Reason

SEED = int(os.environ.get("OPENRDU_SEED", "1"))
STATUS_IDLE, STATUS_OK = 0, 2


async def reset(dut):
    await start_clock_and_reset(dut, zero=("words__valid", "words__payload"))


async def send(dut, words, *, rng=None, idle=0.0, max_gap=TIMEOUT // 2):
    """Offer ``words`` one per cycle, with idle cycles before each word but the first.

    Returns the number of idle cycles between the first and the last word.
    Ends on the falling edge after the last word, with ``words.valid`` low.
    """
    gaps = [0] * len(words)
    if idle:
        for k in range(1, len(words)):
            while gaps[k] < max_gap and rng.random() < idle:
                gaps[k] += 1
    for gap, word in zip(gaps, words):
        if gap:
            dut.words__valid.value = 0
            await ClockCycles(dut.clk, gap, rising=False)
        dut.words__valid.value = 1
        dut.words__payload.value = int(word)
        await ReadOnly()
        assert dut.words__ready.value == 1, "the loader must take a word every cycle"
        await FallingEdge(dut.clk)
    dut.words__valid.value = 0
    return sum(gaps)


def active(dut):
    return {u: int(getattr(dut, f"cfg_{u}").value) for u in TARGETS}


def state(dut):
    return {"status": int(dut.status.value), "load_cycles": int(dut.load_cycles.value),
            "ok": int(dut.loads_ok.value), "refused": int(dut.loads_refused.value), "busy": int(dut.busy.value)}


def random_values(rng, units=TARGETS):
    return {u: int.from_bytes(rng.bytes(64), "little") % (1 << TARGETS[u]) for u in units}


def packed(values, order=None):
    order = order or list(values)
    return bitstream.pack({u: (values[u], TARGETS[u]) for u in order}, version=VERSION)


async def load_good(dut, values, *, rng=None, idle=0.0, order=None):
    """Send a good bitstream for ``values`` and check that it committed exactly, other units unchanged."""
    before = active(dut)
    words = packed(values, order)
    assert bitstream.unpack(words, expected=TARGETS, version=VERSION) == values
    counts = state(dut)
    idles = await send(dut, words, rng=rng, idle=idle)
    await ReadOnly()
    got = state(dut)
    want = {**before, **values}
    assert active(dut) == want, f"active configurations {active(dut)}, expected {want}"
    assert got["status"] == STATUS_OK, f"status {got['status']} after a good bitstream"
    assert got["busy"] == 0
    assert got["ok"] == counts["ok"] + 1 and got["refused"] == counts["refused"]
    assert got["load_cycles"] == bitstream.load_cycles(words) + idles, (
        f"load took {got['load_cycles']} cycles, the formula gives {bitstream.load_cycles(words)} "
        f"+ {idles} idle")
    await FallingEdge(dut.clk)
    return want


async def load_bad(dut, words, reason, *, trailing_idle=0):
    """Send a bitstream that unpack refuses with ``reason``; check the hardware refuses it the same way."""
    try:
        bitstream.unpack(words, expected=TARGETS, version=VERSION)
    except bitstream.BitstreamError as e:
        error = e
    else:
        raise AssertionError(f"unpack accepted a bitstream meant to fail with {reason.name}")
    assert error.reason == reason, f"unpack refused with {error}, expected {reason.name}"
    before = active(dut)
    counts = state(dut)
    await send(dut, words)
    if trailing_idle:
        await ClockCycles(dut.clk, trailing_idle, rising=False)
    await ReadOnly()
    got = state(dut)
    assert got["status"] == int(reason), f"{reason.name}: status {got['status']} ({error})"
    assert active(dut) == before, f"{reason.name}: a refused bitstream changed the active configuration"
    assert got["refused"] == counts["refused"] + 1 and got["ok"] == counts["ok"]
    want_cycles = len(words) + TIMEOUT if reason == Reason.TRUNCATED else error.index + 1
    assert got["load_cycles"] == want_cycles, (
        f"{reason.name}: refused after {got['load_cycles']} cycles, expected {want_cycles} ({error})")
    assert got["busy"] == 0, f"{reason.name}: still busy after the announced end of the bitstream"
    await FallingEdge(dut.clk)


@cocotb.test()
async def good_loads(dut):
    """Reset state, a full load, then bitstreams that change some units only."""
    rng = np.random.default_rng(SEED)
    await reset(dut)
    await ReadOnly()
    assert state(dut) == {"status": STATUS_IDLE, "load_cycles": 0, "ok": 0, "refused": 0, "busy": 0}
    assert active(dut) == {u: 0 for u in TARGETS}
    await FallingEdge(dut.clk)

    full = {u: (1 << w) - 1 - (u % 3) for u, w in TARGETS.items()}
    await load_good(dut, full)
    await load_good(dut, random_values(rng))
    changed = {17: 0x5_5555_5555_AAAA_AAAA_1234_5678, 0: 0b10101}
    await load_good(dut, changed, order=[17, 0])
    await load_good(dut, {258: random_values(rng)[258]})


@cocotb.test()
async def refused_then_good(dut):
    """Each refusal reason from the hardware, and a good load after every one of them."""
    rng = np.random.default_rng(SEED + 1)
    await reset(dut)
    await load_good(dut, random_values(rng))

    def corrupt(edit):
        words = packed(random_values(rng), [1, 17, 2, 258, 0])
        edit(words)
        return words

    # Segment header positions in the order [1, 17, 2, 258, 0]; the CRC is word 26.
    seg_hdr = {1: 4, 17: 6, 2: 11, 258: 14, 0: 24}

    def put(index, value):
        return lambda w: w.__setitem__(index, value)

    def xor(index, mask):
        return lambda w: w.__setitem__(index, w[index] ^ mask)

    def total_26(w):
        # One word short: unit 0's segment would overlap the CRC position.
        w[3] = 26
        del w[26:]

    cases = [
        (Reason.BAD_CHECKSUM, xor(seg_hdr[17] + 1, 1 << 7)),
        (Reason.BAD_CHECKSUM, xor(26, 0x8000_0000)),
        (Reason.BAD_MAGIC, xor(0, 1)),
        (Reason.BAD_VERSION, put(1, VERSION + 1)),
        (Reason.BAD_VERSION, put(1, VERSION | 1 << 16)),
        (Reason.BAD_LENGTH, put(2, 0)),
        (Reason.BAD_LENGTH, put(2, len(TARGETS) + 1)),
        (Reason.BAD_LENGTH, put(3, 5 + 2 * 5 - 1)),
        (Reason.BAD_LENGTH, put(3, bitstream.max_total(TARGETS) + 1)),
        (Reason.BAD_LENGTH, total_26),
        (Reason.BAD_LENGTH, put(seg_hdr[17], 17 << 16 | 3)),
        (Reason.BAD_LENGTH, put(seg_hdr[258], 258 << 16 | 10)),
        (Reason.BAD_LENGTH, xor(seg_hdr[17] + 4, 1 << 4)),
        (Reason.BAD_UNIT, put(seg_hdr[2], 5 << 16 | 2)),
        (Reason.BAD_UNIT, put(seg_hdr[0], 1 << 16 | 1)),
    ]
    for k, (reason, edit) in enumerate(cases):
        await load_bad(dut, corrupt(edit), reason)
        # A partial load must not commit the shadows the refused bitstream left behind.
        await load_good(dut, random_values(rng, [0, 2] if k % 2 == 0 else TARGETS))

    # A total one word too long (a partial bitstream, so the total is still possible): the CRC
    # position is refused, then the loader discards one more word.
    words = packed(random_values(rng, [2, 0]))
    words[3] += 1
    await load_bad(dut, words + [0xFFFF_FFFF], Reason.BAD_LENGTH)
    await load_good(dut, random_values(rng))

    for cut in (2, 4, 9, 24, 25):
        words = packed(random_values(rng), [1, 17, 2, 258, 0])
        await load_bad(dut, words[:cut], Reason.TRUNCATED, trailing_idle=TIMEOUT + 2)
        await load_good(dut, random_values(rng))

    # Zero words between bitstreams are padding: no refusal, status kept.
    before = state(dut)
    await send(dut, [0, 0, 0])
    await ReadOnly()
    assert state(dut) == before, f"zero padding changed the loader state: {before} -> {state(dut)}"
    await FallingEdge(dut.clk)

    # Words that are not a bitstream: one refusal, then the loader waits for a magic word.
    before = state(dut)
    await load_bad(dut, [0x1234, 0, 7], Reason.BAD_MAGIC)
    await send(dut, [5, 6, bitstream.MAGIC ^ 0x100])
    await ReadOnly()
    assert state(dut)["refused"] == before["refused"] + 1, "garbage after a refusal counted again"
    await FallingEdge(dut.clk)
    await load_good(dut, random_values(rng))


@cocotb.test()
async def back_to_back(dut):
    """Good, refused and good bitstreams with no idle cycle between them."""
    rng = np.random.default_rng(SEED + 2)
    await reset(dut)
    first, last = random_values(rng), random_values(rng)
    bad_crc = packed(random_values(rng))
    bad_crc[-1] ^= 1
    bad_version = packed(random_values(rng))
    bad_version[1] ^= 0xFF
    long_total = packed(random_values(rng, [258, 1]))
    long_total[3] += 2
    # long_total's two extra words are discarded; bad_version's body is dropped while hunting for a magic.
    stream = packed(first) + bad_crc + bad_version + long_total + [bitstream.MAGIC, 7] + packed(last)
    await send(dut, stream)
    await ReadOnly()
    got = state(dut)
    assert active(dut) == last, "the last good bitstream was not committed"
    assert got["status"] == STATUS_OK and got["ok"] == 2, f"state {got}"
    assert got["refused"] == 3, f"{got['refused']} refusals, expected 3 (CRC, version, length)"
    assert got["load_cycles"] == bitstream.load_cycles(packed(last))


@cocotb.test()
async def idle_cycles(dut):
    """Random idle cycles on the word stream: same result, load_cycles counts the idles."""
    rng = np.random.default_rng(SEED + 3)
    await reset(dut)
    current = None
    for _ in range(20):
        units = [u for u in TARGETS if rng.random() < 0.6] or [258]
        order = list(rng.permutation(units))
        values = random_values(rng, units)
        current = await load_good(dut, values, rng=rng, idle=0.3, order=[int(u) for u in order])
    bad = packed(random_values(rng))
    bad[9] ^= 1 << 3
    counts = state(dut)
    await send(dut, bad, rng=rng, idle=0.3)
    await ReadOnly()
    assert int(dut.status.value) == int(Reason.BAD_CHECKSUM) and active(dut) == current
    assert state(dut)["refused"] == counts["refused"] + 1


@cocotb.test()
async def reset_mid_load(dut):
    """A reset in the middle of a bitstream, and one between bitstreams (the loader's gated clock stopped),
    leave the loader as the first reset did, and it stays so through idle cycles longer than the timeout;
    the next load is exact."""
    rng = np.random.default_rng(SEED + 4)
    await reset(dut)
    await load_good(dut, random_values(rng))
    words = packed(random_values(rng))
    await send(dut, words[:len(words) // 2])
    await ReadOnly()
    assert dut.busy.value == 1, "the loader is not busy in the middle of a bitstream"
    await FallingEdge(dut.clk)
    await components.reset(dut, zero=("words__valid", "words__payload"))
    for mid_load in (True, False):
        for _ in range(2):
            await ReadOnly()
            assert state(dut) == {"status": STATUS_IDLE, "load_cycles": 0, "ok": 0, "refused": 0, "busy": 0}, (
                f"state {state(dut)} after a reset {'in' if mid_load else 'between'} bitstreams")
            assert active(dut) == {u: 0 for u in TARGETS}
            await ClockCycles(dut.clk, 2 * TIMEOUT, rising=False)
        await load_good(dut, random_values(rng))
        await components.reset(dut, zero=("words__valid", "words__payload"))
