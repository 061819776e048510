"""A clock started by a test that ends before its first await, then a clock in the next test (tests/test_sim_clock.py)."""

import cocotb
from cocotb.triggers import RisingEdge, Timer

from cosim import sim_clock


@cocotb.test()
async def starts_and_returns(dut):
    sim_clock.start_clock(dut.clk, 10, "ns")


@cocotb.test()
async def starts_again(dut):
    await Timer(1, "ns")
    sim_clock.start_clock(dut.clk, 10, "ns")
    await RisingEdge(dut.clk)
