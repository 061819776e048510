"""The simulator loop's clock (cosim/verilator.cpp, cosim.sim_clock) against cocotb's GPI clock."""

import json

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from cosim import harness
from cosim.harness import SimUnit


class _Counter(wiring.Component):
    """Counts the cycles ``en`` is high, and all cycles."""

    en: In(1)
    count: Out(16)
    cycles: Out(16)

    def elaborate(self, platform):
        m = Module()
        with m.If(self.en):
            m.d.sync += self.count.eq(self.count + 1)
        m.d.sync += self.cycles.eq(self.cycles + 1)
        return m


UNIT = SimUnit(name="clock-probe", design=_Counter, testbench="cosim.tb.clock_trace")


def _traces(tmp_path, mode):
    path = tmp_path / f"{mode}.jsonl"
    results = harness.run(UNIT, env={"OPENRDU_SIM_CLOCK": mode, "OPENRDU_CLOCK_TRACE": str(path)}, quiet=True)
    assert results.ok, f"{mode}: {results.failed} of {results.tests} tests failed"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_loop_clock_matches_cocotb_clock(tmp_path):
    cocotb_clock, loop_clock = _traces(tmp_path, "cocotb"), _traces(tmp_path, "loop")
    assert [t["mode"] for t in cocotb_clock] == ["cocotb", "cocotb"]
    assert [t["mode"] for t in loop_clock] == ["loop", "loop"]
    assert [t["test"] for t in loop_clock] == ["first", "restarted"]
    for ours, theirs in zip(loop_clock, cocotb_clock):
        assert ours["rows"] == theirs["rows"], ours["test"]
    for trace in loop_clock:
        rows = trace["rows"]
        start = rows[0][1]
        edges = [row for row in rows if row[0] == "edge"]
        # High at the start, so rising on its 10 ns grid; the waiter sees the clock high.
        times = [row[1] for row in edges]
        assert (times[0] - start) % 10_000 == 0
        assert [b - a for a, b in zip(times, times[1:])] == [10_000] * (len(times) - 1)
        assert all(row[2] == 1 for row in edges)
        # The counter counted: en was high on some edges and low on others.
        counts = [row[3] for row in edges]
        assert counts[-1] > counts[0] and len(set(counts)) < len(counts)
    # The second clock starts off the first one's 5 ns grid (3 ns, and the step cocotb takes between tests).
    assert loop_clock[1]["rows"][0][1] % 5_000 != 0


def test_a_clock_cancelled_before_it_ran_stops():
    # cocotb cancels the clock's task of a test that returned before awaiting, before the task first ran: the
    # loop's clock must stop all the same, or the next test's start_clock finds it running.
    unit = SimUnit(name="clock-probe", design=_Counter, testbench="cosim.tb.clock_restart")
    for mode in ("cocotb", "loop"):
        results = harness.run(unit, env={"OPENRDU_SIM_CLOCK": mode}, quiet=True)
        assert results.ok and results.tests == 2, f"{mode}: {results.failed} of {results.tests} tests failed"
