"""cocotb testbench of one memory-tier controller against a byte-array model.

``OPENRDU_MEM_PARAMS`` names the parameter set in ``hw.mem.params`` and
``OPENRDU_MEM_TIER`` the tier (hbm or ddr). Data written through the front
door is checked through the back door and the other way round.
"""

import os

import cocotb
import numpy as np

from cosim.components import Scoreboard, StreamDriver, StreamMonitor, pauses, run, start_clock_and_reset
from cosim.store import TierStore
from cosim.tb import timing_cases
from cosim.tb.units_mem import CONTROLLER_TAG_BITS
from hw.mem import params as params_module
from hw.mem import tln
from sw.layout import pack, unpack
from hw.mem.controller import QUEUE_CYCLES
from sw.model.memory import TierModel

P = getattr(params_module, os.environ.get("OPENRDU_MEM_PARAMS", "SMALL"))
TIER = {"hbm": params_module.HBM, "ddr": params_module.DDR}[os.environ.get("OPENRDU_MEM_TIER", "hbm")]
T = P.tiers[TIER]
WB = P.word_bytes
REQ = tln.request_layout(word_bytes=WB, addr_bits=P.addr_bits, tag_bits=CONTROLLER_TAG_BITS)
RESP = tln.response_layout(word_bytes=WB, tag_bits=CONTROLLER_TAG_BITS)
SEED = int(os.environ.get("OPENRDU_SEED", "1"))


async def start(dut):
    await start_clock_and_reset(dut, zero=("req__valid", "resp__ready"))


async def exchange(dut, requests, responses, *, idle=0.0, backpressure=0.0, seed=0, stall_limit=1000):
    """Send ``requests`` (dicts) and check every response against ``responses`` (dicts) as it arrives;
    returns the response monitor (its ``cycles``: 0 is the first cycle a request is offered)."""
    show = lambda value: str(unpack(RESP, value))
    board = Scoreboard([pack(RESP, r) for r in responses], name="resp", show=show,
                       describe=lambda _, i: f"to {requests[i]}")
    monitor = StreamMonitor(dut, "resp", board, pauses=pauses(backpressure, (seed, 1)))
    await run(dut, [StreamDriver(dut, "req", [pack(REQ, r) for r in requests], pauses=pauses(idle, (seed, 0))),
                    monitor], stall_limit=stall_limit)
    return monitor


def word_bytes_of(value):
    return np.frombuffer(int(value).to_bytes(WB, "little"), dtype=np.uint8)


def random_requests(rng, count, window, *, bad=0.0):
    """Reads and writes in a ``window``-byte region at the top of the tier, some out of range or misaligned."""
    base = T.capacity - window
    requests = []
    for i in range(count):
        addr = base + WB * int(rng.integers(window // WB))
        if rng.random() < bad:
            addr = [T.capacity + WB * int(rng.integers(64)), addr + int(rng.integers(1, WB)),
                    (1 << P.addr_bits) - WB][int(rng.integers(3))]
        write = bool(rng.random() < 0.5)
        data = int.from_bytes(rng.bytes(WB), "little") if write else 0
        requests.append(dict(tier=TIER, write=int(write), addr=addr, data=data, tag=i % (1 << CONTROLLER_TAG_BITS)))
    return requests


def expected_responses(memory, requests):
    out = []
    for r in requests:
        addr = r["addr"]
        bad = addr % WB != 0 or addr >= T.capacity
        if bad:
            out.append(dict(data=0, tag=r["tag"], write=r["write"], error=1))
        elif r["write"]:
            memory[addr:addr + WB] = word_bytes_of(r["data"])
            out.append(dict(data=0, tag=r["tag"], write=1, error=0))
        else:
            out.append(dict(data=int.from_bytes(memory[addr:addr + WB].tobytes(), "little"),
                            tag=r["tag"], write=0, error=0))
    return out


@cocotb.test()
async def random_traffic_under_stalls(dut):
    """Random reads, writes and bad addresses with 20% idle and back-pressure, checked response by response."""
    await start(dut)
    store = TierStore(TIER, T.capacity)
    rng = np.random.default_rng(SEED)
    window = 4096
    model = np.zeros(T.capacity, dtype=np.uint8)
    model[T.capacity - window:] = store.read(T.capacity - window, window)
    requests = random_requests(rng, int(os.environ.get("OPENRDU_MEM_OPS", "3000")), window, bad=0.03)
    expected = expected_responses(model, requests)
    errors_before = stats_now(dut)["errors"]
    await exchange(dut, requests, expected, idle=0.2, backpressure=0.2, seed=SEED, stall_limit=T.latency * 4 + 100)
    assert np.array_equal(store.read(T.capacity - window, window), model[T.capacity - window:]), \
        "backing store differs from the model after the traffic"
    stats = stats_now(dut)
    bad = [r for r in requests if r["addr"] % WB or r["addr"] >= T.capacity]
    assert stats["errors"] - errors_before == len(bad)
    if errors_before == 0 and bad:
        assert stats["first_error_addr"] == bad[0]["addr"]


def stats_now(dut):
    from hw.mem.controller import stats_layout

    return unpack(stats_layout(P.addr_bits), int(dut.stats.value))


@cocotb.test()
async def backdoor_and_frontdoor_agree(dut):
    """Words loaded through the back door read back through the controller, at both ends of the tier."""
    await start(dut)
    store = TierStore(TIER, T.capacity)
    rng = np.random.default_rng(SEED + 1)
    spots = [0, WB * 37, T.capacity // 2, T.capacity - 8 * WB]
    payload = {}
    for spot in spots:
        block = rng.integers(0, 256, 8 * WB, dtype=np.uint8)
        store.write(spot, block)
        for k in range(8):
            payload[spot + k * WB] = int.from_bytes(block[k * WB:(k + 1) * WB].tobytes(), "little")
    requests = [dict(tier=TIER, write=0, addr=a, data=0, tag=i % 16) for i, a in enumerate(payload)]
    await exchange(dut, requests, [dict(data=payload[r["addr"]], tag=r["tag"], write=0, error=0) for r in requests])


@cocotb.test(skip=P is not params_module.SMALL)
async def stream_timing_table(dut):
    """Reads of consecutive words offered back to back take exactly the cycles of ``cosim/tb/timing_cases.py``
    (first offered to last response, inclusive), which the model tests hold ``TierModel`` to."""
    await start(dut)
    words, cycles = timing_cases.TIER_STREAM[T.name]
    store = TierStore(TIER, T.capacity)
    requests = [dict(tier=TIER, write=0, addr=WB * i, data=0, tag=i % 16) for i in range(words)]
    responses = [dict(data=int.from_bytes(store.read(r["addr"], WB).tobytes(), "little"), tag=r["tag"], write=0,
                      error=0) for r in requests]
    monitor = await exchange(dut, requests, responses)
    got = monitor.cycles[-1] + 1
    assert got == cycles, f"{words} reads took {got} cycles, the table says {cycles}"


@cocotb.test()
async def latency_and_bandwidth_are_as_configured(dut):
    """A long stream of reads: first data after the configured latency, then exactly the configured rate."""
    await start(dut)
    count = 200
    requests = [dict(tier=TIER, write=0, addr=WB * i, data=0, tag=i % 16) for i in range(count)]
    store = TierStore(TIER, T.capacity)
    responses = [dict(data=int.from_bytes(store.read(r["addr"], WB).tobytes(), "little"), tag=r["tag"], write=0,
                      error=0) for r in requests]
    stats0 = stats_now(dut)
    first = await exchange(dut, requests[:1], responses[:1])
    # Cycle 0 accepts the request; the word leaves the queue QUEUE_CYCLES
    # later and its response is valid ``latency`` cycles after that.
    unloaded = QUEUE_CYCLES + T.latency
    assert first.cycles[0] == unloaded, f"single-read latency {first.cycles[0]}, want {unloaded}"

    monitor = await exchange(dut, requests, responses)
    period = T.bytes_per_cycle
    cycles = monitor.cycles[-1]
    expected = unloaded + (count - 1) * WB / period
    assert abs(cycles - expected) <= 1, f"{count} reads took {cycles} cycles, want {expected} at {period} B/cycle"
    # The fast model replays the controller's rules; offered back to back
    # from cycle 0, it must be exact.
    model = TierModel(T, word_bytes=WB)
    predicted = model.service([0] * count)
    assert monitor.cycles == predicted, \
        f"model and RTL response cycles differ first at word " \
        f"{next(i for i, (a, b) in enumerate(zip(monitor.cycles, predicted)) if a != b)}"
    stats = stats_now(dut)
    assert stats["reads"] - stats0["reads"] == count + 1
    assert stats["busy"] - stats0["busy"] == count + 1
