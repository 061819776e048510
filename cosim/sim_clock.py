"""The toplevel's clock, driven by the simulator's own loop instead of a cocotb clock.

:mod:`cosim.harness` builds every unit with ``cosim/verilator.cpp``,
cocotb's Verilator main with a clock of its own: started from here (over
``ctypes``, in the simulator process the testbench runs in), it flips the
port's storage at each edge time before the time step's evaluation, where
cocotb's GPI clock puts the value from a timer callback and the loop
evaluates the model twice. The clock is the same as
``Clock(signal, period, unit, impl="gpi").start()``: it starts high at the
call, toggles every half period, wakes ``RisingEdge`` waiters at the same
point of the time step, and stops when the test ends.

``OPENRDU_SIM_CLOCK=cocotb`` starts cocotb's GPI clock instead (for
comparisons); unset or ``loop``, the loop's.
"""

import ctypes
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import Event
from cocotb.utils import get_sim_steps

_MODES = ("loop", "cocotb")


def mode():
    """``"loop"`` or ``"cocotb"``: which clock :func:`start_clock` starts (``OPENRDU_SIM_CLOCK``)."""
    setting = os.environ.get("OPENRDU_SIM_CLOCK", "").strip().lower() or "loop"
    if setting not in _MODES:
        raise RuntimeError(f"OPENRDU_SIM_CLOCK must be one of {', '.join(_MODES)}, not {setting!r}")
    return setting


def _entry_points():
    """The simulator executable's ``openrdu_clock_start`` and ``openrdu_clock_stop``."""
    main = ctypes.CDLL(None)
    try:
        start, stop = main.openrdu_clock_start, main.openrdu_clock_stop
    except AttributeError:
        raise RuntimeError("the simulator was not built with cosim/verilator.cpp (no openrdu_clock_start); "
                           "set OPENRDU_SIM_CLOCK=cocotb to use cocotb's clock") from None
    start.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int]
    start.restype = ctypes.c_int
    stop.argtypes, stop.restype = [], ctypes.c_int
    return start, stop


def start_clock(signal, period, unit="ns"):
    """Start ``signal``, a top-level input, toggling with ``period`` (high first); returns the clock's task.

    Cancelling the task (cocotb does so at the end of the test) stops the
    clock, as it stops a :class:`cocotb.clock.Clock`. One difference: a test
    that ends in a timer falling exactly on an edge stops the loop's clock
    before that edge, where cocotb's clock may still make it (it depends on
    the order cocotb's timers were registered), so the next test may start
    from the other level.

    Parameters
    ----------
    signal : cocotb handle
        A public 1-bit top-level input.
    period : int
        The clock period in ``unit``, an even number of simulator steps.
    unit : str
        cocotb's time unit of ``period``.

    Returns
    -------
    cocotb.task.Task
        The clock's task; cancelling it stops the clock.

    Raises
    ------
    ValueError
        An odd period or a signal below the toplevel.
    RuntimeError
        The simulator was not built with ``cosim/verilator.cpp`` or could not start the clock.
    """
    if mode() == "cocotb":
        return Clock(signal, period, unit=unit, impl="gpi").start()
    steps = get_sim_steps(period, unit)
    if steps % 2:
        raise ValueError(f"the clock period ({steps} steps) must be even")
    name = signal._name
    if signal._path.count(".") != 1 or not signal._path.endswith(f".{name}"):
        raise ValueError(f"the loop drives only a top-level port, not {signal._path}")
    start, stop = _entry_points()
    if start(name.encode(), signal._path.encode(), steps // 2, steps // 2, 1) != 0:
        raise RuntimeError(f"the simulator could not start a clock on {signal._path} (see its log)")

    async def run():
        # Waits for ever: the test's end cancels it, and the clock stops with it.
        await Event().wait()

    task = cocotb.start_soon(run())
    # A done callback, not a finally: a task cancelled before it first ran (a test that ends or fails before its
    # first await) never enters its body, and its clock would run on into the next test.
    task._add_done_callback(lambda _: stop())
    return task
