"""A minimal AXI4-Lite master for the runtime's register traffic: one coroutine per transaction.

cocotbext-axi's :class:`~cocotbext.axi.AxiLiteMaster` runs each access
through command queues, events, a source per request channel and a sink per
response channel, each with coroutines of its own: about thirteen cocotb
task resumptions per register access, most of the Python in a co-simulated
decode (docs/performance.md). :class:`AxiLiteHost` runs each access in the
caller's own coroutine, one wake-up per clock cycle it lasts, with the same
sampling as cocotbext-axi's streams (``cocotbext/axi/stream.py``): it drives
after a rising edge and reads ready and valid right after the next one,
their values at that edge. The verification testbenches keep cocotbext-axi.
"""

from asyncio import CancelledError
from collections import deque

import cocotb
# The simulator's own time as a pair, without cocotb.utils' unit conversion: a call compares it, once an access.
from cocotb.simulator import get_sim_time
from cocotb.triggers import Event, RisingEdge, ValueChange

from sw.errors import ChipError

RESPONSES = {0: "OKAY", 1: "EXOKAY", 2: "SLVERR", 3: "DECERR"}


def _named(handle, names=RESPONSES):
    """A response field's value as the message names it: its code's name, else its bits as read."""
    value = handle.value
    try:
        code = int(value)
    except ValueError:  # X or Z bits
        return str(value)
    return names.get(code, f"{code:#x}")


class Turns:
    """One holder at a time, the others served in the order they asked; taking it free costs no wait.

    A holder takes it with ``if not turns.take(): await turns.wait()`` and
    hands it on with :meth:`give`. (cocotb's ``Lock`` makes every
    acquisition a trigger, one more task resumption.) A waiter may be
    cancelled (``Task.cancel``); ``Task.kill``, deprecated, runs no cleanup
    and would leave its turn in the queue for good.
    """

    def __init__(self):
        self.held = False
        self._queue = deque()

    def take(self):
        """Take it if it is free (True); False where the caller must :meth:`wait`."""
        if self.held:
            return False
        self.held = True
        return True

    async def wait(self):
        """Return holding it, after everyone who asked before."""
        turn = Event()
        self._queue.append(turn)
        try:
            await turn.wait()
        except BaseException:
            # Cancelled while queued: pass on a turn already handed over, or leave the queue.
            if turn.is_set():
                self.give()
            else:
                self._queue.remove(turn)
            raise

    def give(self):
        """Hand it to the next in line (who then holds it), or free it."""
        if self._queue:
            self._queue.popleft().set()
        else:
            self.held = False


class AxiLiteHost:
    """32-bit register reads and writes over a flat AXI4-Lite slave port of the toplevel.

    A write raises ``awvalid`` and ``wvalid`` together at the call, drops
    each after its handshake, then raises ``bready`` and takes the B
    response; a read raises ``arvalid``, then ``rready`` after its handshake,
    and takes R. A ready is high only from its access's request handshake to
    its response, which is taken the cycle it is offered (AXI offers it the
    cycle after that handshake at the earliest). Valids are driven at the
    call, not after the next edge as cocotbext-axi's sources do: the first
    handshake can come a cycle sooner.

    A response offered while no access of its direction waits for one is not
    taken: AXI holds it on the bus, and the next access of that direction
    sees it and raises :class:`~sw.errors.ChipError` naming it (``AXI4-Lite:
    a write response (BRESP OKAY) came with no write outstanding``), as does
    every later access, reads and writes, until the next reset. It sees it
    at its call (a read of ``bvalid``, ``rvalid``; skipped in the timestep
    of its direction's last response, where the valid still reads as
    sampled at the edge that took that response), or at any edge up to and
    including the one that takes its own request (a read at each): a
    response sampled there is not its own. Its request then completes, and
    it raises without waiting for its response. Nothing runs while idle.

    Not seen: a response offered once an access's request is taken and
    before its own, which it takes as its own. Its own then waits on the
    bus, and the next access of that direction raises, provided the slave
    offers it by the edge that takes that access's request; a pipelined
    slave that takes the next request before answering the last one would
    pass the last access's response to the next, one access late, until a
    call comes after a long enough gap.

    Coroutines may call at once: their writes go out one at a time, in the
    order of the calls, and so do their reads (:class:`Turns`); a write and a
    read may be in flight together, as with cocotbext-axi's master.

    ``resets`` counts the edges of the reset input (a simulator callback, not
    a per-cycle check). A transaction during which it changes, queued or in
    flight, is abandoned at the next clock edge: its valids drop, a write
    returns False and a read raises :class:`~sw.errors.ChipError`, as
    cocotbext-axi's master flushes what is queued and in flight when reset is
    asserted. A transaction called while the reset input is not low is not
    issued at all (the same outcomes), where cocotbext-axi's would wait for
    the reset to end.

    A caller cancelled (``Task.cancel``) while its access is in flight leaves
    the slave in the middle of it: its valids drop, its ready goes (or
    stays) high so that the slave's response to it is taken and dropped, and
    every later access raises :class:`~sw.errors.ChipError` until the next
    reset, so that none takes the abandoned access's response for its own.
    One cancelled while queued only leaves the queue.

    Parameters
    ----------
    dut : cocotb handle
        The toplevel, with the ports ``{prefix}_awaddr``, ``_awvalid``,
        ``_awready``, ``_wdata``, ``_wvalid``, ``_wready``, ``_bresp``,
        ``_bvalid``, ``_bready``, ``_araddr``, ``_arvalid``, ``_arready``,
        ``_rdata``, ``_rresp``, ``_rvalid``, ``_rready``, and optionally
        ``_wstrb`` (held all ones), ``_awprot`` and ``_arprot`` (held 0).
        ``wdata`` and ``rdata`` are 32 bits.
    prefix : str
        The ports' common prefix.
    clock : cocotb handle
        The bus's clock; transactions are sampled at its rising edges.
    reset : cocotb handle
        The bus's active-high reset.
    """

    def __init__(self, dut, prefix="s_axil", *, clock, reset):
        def port(name):
            return getattr(dut, f"{prefix}_{name}")

        for name in ("wdata", "rdata"):
            if len(port(name)) != 32:
                raise ValueError(f"{prefix}_{name} is {len(port(name))} bits wide; AxiLiteHost needs 32")
        self._awaddr, self._awvalid, self._awready = port("awaddr"), port("awvalid"), port("awready")
        self._wdata, self._wvalid, self._wready = port("wdata"), port("wvalid"), port("wready")
        self._bresp, self._bvalid, self._bready = port("bresp"), port("bvalid"), port("bready")
        self._araddr, self._arvalid, self._arready = port("araddr"), port("arvalid"), port("arready")
        self._rdata, self._rresp = port("rdata"), port("rresp")
        self._rvalid, self._rready = port("rvalid"), port("rready")
        for name, value in (("wstrb", 0xF), ("awprot", 0), ("arprot", 0)):
            if hasattr(dut, f"{prefix}_{name}"):
                port(name).value = value
        for handle in (self._awvalid, self._wvalid, self._arvalid, self._bready, self._rready):
            handle.value = 0
        self._reset = reset
        # Whether the reset input is not low, kept by _count_resets: a call tests it without reading the port.
        self._in_reset = reset.value != 0
        # One trigger object for every wait: cocotb re-arms it without building a new one.
        self._edge = RisingEdge(clock)
        self._writes, self._reads = Turns(), Turns()
        self.resets = 0
        # The reset count when a caller was cancelled in the middle of an access: the slave may still answer it,
        # so no access is issued until the next reset.
        self._cut = None
        # (reset count, what was offered) when a response came with nothing of its direction outstanding: no access
        # is issued until the next reset.
        self._stray = None
        # The simulation time (get_sim_time's pair) of the last B and R taken: a call in that timestep reads that
        # response's valid as sampled at the edge that took it.
        self._b_taken = self._r_taken = None
        cocotb.start_soon(self._count_resets())

    async def _count_resets(self):
        reset = self._reset
        while True:
            await ValueChange(reset)
            self.resets += 1
            self._in_reset = reset.value != 0
            # No access waits for a response across a reset (each drops at its next edge), and one cancelled in flight
            # no longer holds its ready high: a response offered from now on is held until an access asks for it.
            self._bready.value = 0
            self._rready.value = 0

    def _check_whole(self, offset):
        if self._cut == self.resets:
            raise ChipError(f"the register access at {offset:#x} was not issued: an access cancelled in flight "
                            "left the bus in the middle of a transaction until the chip is reset")
        if self._stray is not None and self._stray[0] == self.resets:
            raise self._stray_error(offset)

    def _stray_error(self, offset, issued=False):
        state = "issued, its response not taken" if issued else "not issued"
        return ChipError(f"the register access at {offset:#x} was {state}: {self._stray[1]}; "
                         "no access is issued until the chip is reset")

    def _unsolicited(self, offset, what, issued=False):
        # A response offered while no access of its direction waited for one (the ready was low, or this access's
        # request was not yet taken): whatever access took it would take it for its own. Recorded for every access
        # until a reset; returns the error for this one to raise.
        self._stray = (self.resets, f"AXI4-Lite: {what}")
        return self._stray_error(offset, issued)

    async def _response(self, ready, valid, resets):
        """Raise ``ready`` and take the response the cycle ``valid`` offers it: True, or False where a reset (one
        past the count ``resets``) came first (the reset counter lowers ``ready``)."""
        edge = self._edge
        ready.value = 1
        while True:
            await edge
            if self.resets != resets:
                return False
            if valid.value:
                ready.value = 0
                return True

    def _check_offset(self, offset):
        if offset % 4:
            raise ValueError(f"register offset {offset:#x} is not a multiple of 4")

    def _cancelled(self, valids, ready):
        # A caller cancelled in flight (cocotb throws CancelledError at its await): the slave may hold the access.
        # Its response, if it comes, is taken and dropped (the ready falls at the next reset).
        for valid in valids:
            valid.value = 0
        ready.value = 1
        self._cut = self.resets

    async def write32(self, offset, value):
        """Write the 32-bit word ``value`` at byte ``offset``.

        Returns
        -------
        bool
            True once the slave answered OKAY; False when the write was not
            issued (called in reset) or a reset came before its response.

        Raises
        ------
        ChipError
            The slave answered SLVERR or DECERR; the message names the value,
            the offset and the response. Also, without issuing it, after an
            access cancelled in flight and before the next reset, and when a
            response came with no access of its direction outstanding (this
            call found a B response on the bus, or an earlier one found a B
            or an R) and no reset since; the message names the response. A B
            met at or before the edge that takes this write's request raises
            once the request has completed, without its response.
        """
        self._check_offset(offset)
        resets, turns = self.resets, self._writes
        if not turns.take():
            await turns.wait()
        try:
            # A reset while queued drops the write as one in flight.
            if self._in_reset or self.resets != resets:
                return False
            self._check_whole(offset)
            # bready is low: a B offered since the last write's was held (unless this is that one, read as sampled at
            # the edge that took it).
            bvalid = self._bvalid
            if get_sim_time() != self._b_taken and bvalid.value:
                raise self._unsolicited(offset, f"a write response (BRESP {_named(self._bresp)}) came with no write "
                                          "outstanding")
            edge = self._edge
            awvalid, wvalid, awready, wready = self._awvalid, self._wvalid, self._awready, self._wready
            self._awaddr.value = int(offset)
            self._wdata.value = int(value)
            awvalid.value = 1
            wvalid.value = 1
            aw_open = w_open = True
            stray = None
            while aw_open or w_open:
                await edge
                if self.resets != resets:
                    if aw_open:
                        awvalid.value = 0
                    if w_open:
                        wvalid.value = 0
                    return False
                # A B sampled at or before the edge that takes this write's request is not its own (AXI: BVALID
                # follows the AW and W handshakes): likely the last write's, which took a stray for its own. The
                # request still completes.
                if stray is None and bvalid.value:
                    stray = (f"a write response (BRESP {_named(self._bresp)}) came before this write's request was "
                             "taken (the last write's result may have been another response's)")
                if aw_open and awready.value:
                    awvalid.value = 0
                    aw_open = False
                if w_open and wready.value:
                    wvalid.value = 0
                    w_open = False
            if stray is not None:
                raise self._unsolicited(offset, stray, issued=True)
            if not await self._response(self._bready, bvalid, resets):
                return False
            self._b_taken = get_sim_time()
            resp = int(self._bresp.value)
        except (CancelledError, GeneratorExit):
            self._cancelled((self._awvalid, self._wvalid), self._bready)
            raise
        finally:
            turns.give()
        if resp:
            raise ChipError(f"the chip refused the register write of {int(value):#x} at {offset:#x} "
                            f"({RESPONSES[resp]})")
        return True

    async def read32(self, offset):
        """The 32-bit word at byte ``offset``.

        Raises
        ------
        ChipError
            The slave answered SLVERR or DECERR (its data is not returned),
            or the read was not issued (called in reset; after an access
            cancelled in flight and before the next reset; when a response
            came with no access of its direction outstanding, found by this
            call on R or by an earlier one on B or R, and no reset since) or
            a reset came before its response; the message names the offset
            and why (an unasked-for response by its RRESP and RDATA, or
            BRESP). An R met at or before the edge that takes this read's
            request raises once the request has completed, without its
            response.
        """
        self._check_offset(offset)
        resets, turns = self.resets, self._reads
        if not turns.take():
            await turns.wait()
        try:
            if self._in_reset:
                raise ChipError(f"the register read at {offset:#x} was called while the chip is in reset")
            if self.resets != resets:
                raise ChipError(f"a reset dropped the register read at {offset:#x} while it was queued")
            self._check_whole(offset)
            # rready is low: an R offered since the last read's was held (unless this is that one, read as sampled at
            # the edge that took it).
            rvalid = self._rvalid
            if get_sim_time() != self._r_taken and rvalid.value:
                raise self._unsolicited(offset, f"a read response (RRESP {_named(self._rresp)}, RDATA "
                                          f"{_named(self._rdata, {})}) came with no read outstanding")
            edge, arvalid, arready = self._edge, self._arvalid, self._arready
            self._araddr.value = int(offset)
            arvalid.value = 1
            stray = None
            while True:
                await edge
                if self.resets != resets:
                    arvalid.value = 0
                    raise ChipError(f"a reset dropped the register read at {offset:#x}")
                # As in write32: an R sampled at or before the edge that takes this read's request is not its own.
                if stray is None and rvalid.value:
                    stray = (f"a read response (RRESP {_named(self._rresp)}, RDATA {_named(self._rdata, {})}) came "
                             "before this read's request was taken (the last read's result may have been another "
                             "response's)")
                if arready.value:
                    arvalid.value = 0
                    break
            if stray is not None:
                raise self._unsolicited(offset, stray, issued=True)
            if not await self._response(self._rready, rvalid, resets):
                raise ChipError(f"a reset dropped the register read at {offset:#x}")
            self._r_taken = get_sim_time()
            resp = int(self._rresp.value)
            data = int(self._rdata.value)
        except (CancelledError, GeneratorExit):
            self._cancelled((self._arvalid,), self._rready)
            raise
        finally:
            turns.give()
        if resp:
            raise ChipError(f"the chip refused the register read at {offset:#x} ({RESPONSES[resp]})")
        return data
