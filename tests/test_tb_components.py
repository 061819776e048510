"""The testbench components (cosim/components.py) against small Amaranth designs under amaranth.sim.

A one-register stream stage passes every check under random idle cycles and
back-pressure; deliberately wrong versions of it (an extra output, an output
dropped in the middle or at the end, a ``last`` flag on the wrong item, a
payload that changes while stalled, an output long after the last expected
one) must each fail with the matching error.
"""

from types import SimpleNamespace

import pytest
from amaranth import Elaboratable, Module, Signal
from amaranth.sim import Simulator

from cosim.components import (CycleLoop, Scoreboard, ScoreboardError, StallError, StreamDriver, StreamMonitor,
                              StreamProtocolError, pauses)

LAST = 8  # payload: 8 data bits, then the last flag


class Stage(Elaboratable):
    """One register between stream ``i`` and stream ``o``, with an optional deliberate bug."""

    def __init__(self, bug=None):
        self.bug = bug
        self.i_valid, self.i_ready, self.i_payload = Signal(), Signal(), Signal(LAST + 1)
        self.o_valid, self.o_ready, self.o_payload = Signal(), Signal(), Signal(LAST + 1)
        self.done = Signal()

    def dropped(self, taken):
        if self.bug == "missing":
            return self.i_payload[LAST]
        return taken == 2 if self.bug == "dropped" else 0

    def elaborate(self, platform):
        m = Module()
        taken = Signal(8)       # inputs accepted
        again = Signal()        # the final item was sent twice already
        late = Signal(6)        # cycles since the final item left
        repeat = (self.o_valid & self.o_payload[LAST] & ~again) if self.bug == "extra" else 0
        m.d.comb += self.i_ready.eq(~self.o_valid | (self.o_ready & ~repeat))
        loaded = self.i_payload ^ ((taken == 1) << LAST if self.bug == "last" else 0)
        with m.If(self.o_valid & self.o_ready & repeat):
            m.d.sync += again.eq(1)
        with m.Elif(self.i_ready):
            m.d.sync += [self.o_valid.eq(self.i_valid & ~self.dropped(taken)),
                         self.o_payload.eq(loaded), taken.eq(taken + self.i_valid)]
        with m.Elif(self.bug == "unstable"):
            m.d.sync += self.o_payload.eq(self.o_payload + 1)
        # ``done`` rises 20 cycles after the final item left; the "late" bug sends one more item then.
        with m.If(self.o_valid & self.o_ready & self.o_payload[LAST]):
            m.d.sync += late.eq(1)
        with m.Elif(late.any() & (late < 40)):
            m.d.sync += late.eq(late + 1)
        m.d.comb += self.done.eq(late >= 20)
        if self.bug == "late":
            with m.If((late == 20) & ~self.o_valid):
                m.d.sync += [self.o_valid.eq(1), self.o_payload.eq(0x55)]
        return m


class Handle:
    """A cocotb-like ``.value`` on an Amaranth signal inside a testbench."""

    def __init__(self, ctx, signal):
        self.ctx, self.signal = ctx, signal

    @property
    def value(self):
        return self.ctx.get(self.signal)

    @value.setter
    def value(self, v):
        self.ctx.set(self.signal, v)


def payloads(n):
    """n items of counting data, ``last`` on the final one."""
    return [k * 37 % 256 | (k == n - 1) << LAST for k in range(n)]


def simulate(bug=None, *, n=24, idle=0.3, back=0.3, seed=1, expected=None, use_done=False, settle=8):
    stage = Stage(bug)
    out = {}

    async def bench(ctx):
        dut = SimpleNamespace(**{f"{s}__{f}": Handle(ctx, getattr(stage, f"{s}_{f}"))
                                 for s in ("i", "o") for f in ("valid", "ready", "payload")})
        sent = payloads(n)
        driver = StreamDriver(dut, "i", sent, pauses=pauses(idle, (seed, 0)))
        board = Scoreboard(sent if expected is None else expected, name="o", last_bit=LAST)
        monitor = StreamMonitor(dut, "o", board, pauses=pauses(back, (seed, 1)))
        loop = CycleLoop([driver, monitor], settle=settle, stall_limit=50,
                         done=(lambda: ctx.get(stage.done)) if use_done else None)
        while True:
            loop.drive()
            if loop.sample():
                break
            await ctx.tick()
        loop.stop()
        out.update(driver=driver, monitor=monitor, loop=loop)

    sim = Simulator(stage)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return out


@pytest.mark.parametrize("idle, back", [(0.0, 0.0), (0.3, 0.3), (0.6, 0.1)])
def test_correct_stage_passes(idle, back):
    r = simulate(idle=idle, back=back)
    assert r["monitor"].items == payloads(24)
    assert r["driver"].sent == 24
    if idle == back == 0.0:
        # One register: the item offered in cycle k leaves in cycle k + 1, one a cycle.
        assert r["driver"].cycles == list(range(24)) and r["monitor"].cycles == list(range(1, 25))


def test_pauses_are_seeded_and_bounded():
    a, b = pauses(0.3, 5), pauses(0.3, 5)
    draws = [next(a) for _ in range(10_000)]
    assert draws == [next(b) for _ in range(10_000)]
    assert 0.27 < sum(draws) / len(draws) < 0.33
    assert not any(next(pauses(0.0)) for _ in range(100))
    with pytest.raises(ValueError):
        pauses(1.0)


def test_extra_output_after_the_last_expected_fails():
    with pytest.raises(ScoreboardError, match="extra output"):
        simulate("extra")
    with pytest.raises(ScoreboardError, match="extra output"):
        simulate("extra", idle=0.0, back=0.0)


def test_missing_output_fails():
    with pytest.raises(ScoreboardError, match="missing outputs: 23 of 24 arrived"):
        simulate("missing")
    with pytest.raises(ScoreboardError, match="o output 2 in cycle"):
        simulate("dropped")


def test_last_flag_in_the_wrong_place_fails():
    with pytest.raises(ScoreboardError, match=r"o output 1: last flag 1 .*expected 0 \(data equal\)"):
        simulate("last")


def test_payload_change_while_stalled_fails():
    with pytest.raises(StreamProtocolError, match="changed from"):
        simulate("unstable", back=0.5)


def test_wrong_data_fails_at_arrival():
    wrong = payloads(24)
    wrong[5] ^= 4
    with pytest.raises(ScoreboardError, match="o output 5 in cycle"):
        simulate(expected=wrong)


def test_monitor_listens_until_done_and_beyond():
    # Without the done signal the loop ends 8 cycles after the final item and misses the late one.
    simulate("late")
    r = simulate(use_done=True)
    assert r["loop"].cycle > r["monitor"].cycles[-1] + 20
    with pytest.raises(ScoreboardError, match="extra output 0x55"):
        simulate("late", use_done=True)


def test_stalled_input_is_reported():
    # Expecting more outputs than inputs: the stage goes quiet and the scoreboard names what is missing.
    with pytest.raises(ScoreboardError, match="24 of 25 arrived"):
        simulate(expected=payloads(24) + [0])
    never = SimpleNamespace(done=False, drive=lambda: None, sample=lambda cycle: False, status=lambda: "never done")
    loop = CycleLoop([never], stall_limit=3)
    with pytest.raises(StallError, match="never done"):
        for _ in range(10):
            loop.drive()
            loop.sample()


def test_scoreboard_counting_only():
    board = Scoreboard([None, 0x7, None], name="o")
    for cycle, value in enumerate((0x1, 0x7, 0x2)):
        board.check(value, cycle)
    with pytest.raises(ScoreboardError, match="extra output 0x3"):
        board.check(0x3, 3)
    with pytest.raises(ScoreboardError, match="got 0x6, expected 0x7"):
        Scoreboard([0x7], name="o").check(0x6, 0)


def test_scoreboard_queues_by_key():
    board = Scoreboard({0: [0x10, 0x12], 1: [0x11]}, name="resp", key=lambda v: v & 1)
    board.check(0x11, 0)
    board.check(0x10, 1)
    assert not board.complete
    with pytest.raises(ScoreboardError, match=r"extra output 0x13 .* of 1"):
        board.check(0x13, 2)
    board.check(0x12, 3)
    board.finish()
    with pytest.raises(ValueError):
        Scoreboard({0: []}, name="x")
