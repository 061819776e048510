"""The whole mini-RDU: tile array, AGCUs, program loader, copy engine, host port, TLN and both memory tiers."""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from hw.mem.agcu import direction_status_layout, transfer_layout
from hw.mem.axi_slice import connect_host_buses
from hw.mem.controller import COUNTER_BITS, stats_layout
from hw.mem.copy import copy_config_layout, copy_status_layout
from hw.mem.csr import CsrBank, Register, axil_slave_members
from hw.mem.host import axi4_slave_members, host_stats_layout
from hw.mem.params import MemParams
from hw.mem.sequencer import Sequencer, sequencer_status_layout
from hw.mem.system import HOST_ID_BITS, MemorySystem
from hw.tile.array import IO_SIDES, TileArray, io_port_name
from hw.tile.params import ArrayParams
from hw.tile.pcu import ALL_TAIL_OPS, POST_OPS


def all_io_positions(array_params):
    """Every I/O position of the array, top row first: where the AGCUs sit by default."""
    return tuple((side, c) for side in IO_SIDES for c in range(array_params.cols))


def chip_registers(array_params, mem_params, agcus):
    """The chip's control and status registers, in address order; see docs/chip.md."""
    transfer = transfer_layout(mem_params).size
    status = direction_status_layout().size
    regs = [
        Register("cycle", COUNTER_BITS, "ro", doc="cycles since reset"),
        Register("kernel_start", 1, "w1p", doc="start every enabled AGCU direction at once"),
        Register("kernel_enable", 2 * len(agcus), "rw", doc="bit 2k: AGCU k reads, bit 2k+1: AGCU k writes"),
        Register("kernel_status", 3, "ro", doc="busy, done, error (an enabled direction saw an error response)"),
        Register("kernel_cycles", 32, "ro", doc="cycles of the latest kernel, start pulse to last direction done"),
        Register("program", transfer, "rw", doc="program loader pattern (transfer_layout; start ignored)"),
        Register("program_start", 1, "w1p", doc="stream the program from memory into the array's loader"),
        Register("program_status", status, "ro", doc="program loader (direction_status_layout)"),
        Register("config_status", 4, "ro", doc="array loader Status: 2 OK, 3.. refusals"),
        Register("config_load_cycles", 32, "ro"),
        Register("config_loads", 64, "ro", doc="loads accepted (low word) and refused (high word)"),
        Register("copy", copy_config_layout(mem_params).size, "rw", doc="copy engine (start ignored)"),
        Register("copy_start", 1, "w1p"),
        Register("copy_status", copy_status_layout().size, "ro"),
        Register("hbm_stats", stats_layout(mem_params.addr_bits).size, "ro"),
        Register("ddr_stats", stats_layout(mem_params.addr_bits).size, "ro"),
        Register("host_stats", host_stats_layout().size, "ro"),
    ]
    for k in range(len(agcus)):
        regs += [
            Register(f"agcu{k}_read", transfer, "rw", doc="read pattern (transfer_layout; start ignored)"),
            Register(f"agcu{k}_write", transfer, "rw", doc="write pattern"),
            Register(f"agcu{k}_read_status", status, "ro"),
            Register(f"agcu{k}_write_status", status, "ro"),
        ]
    for i in range(array_params.rows * array_params.cols):
        regs += [Register(f"unit{i}_busy", 32, "ro"), Register(f"unit{i}_stall", 32, "ro")]
    # The launch sequencer's (hw/mem/sequencer.py), after the rest so their offsets stay.
    regs += [
        Register("seq_list", transfer, "rw", doc="the launch list's pattern in TLN words (transfer_layout)"),
        Register("seq_token", 32, "rw", doc="the step's token id: bases step by token * token_stride"),
        Register("seq_pos", 32, "rw", doc="the step's position: bases step by pos * pos_stride"),
        Register("seq_start", 1, "w1p", doc="walk the launch list"),
        Register("seq_status", sequencer_status_layout().size, "ro",
                 doc="busy, done, error, cause, phase, entry (sequencer_status_layout)"),
        Register("seq_enable", 2 * len(agcus), "ro", doc="kernel_enable of the latest entry launched"),
        Register("seq_list_status", status, "ro", doc="the list reader (direction_status_layout)"),
        Register("seq_cycles", 32, "ro", doc="start pulse to done"),
        Register("seq_kernel_cycles", 32, "ro", doc="sum of the list's kernels' cycles"),
        Register("seq_program_cycles", 32, "ro", doc="sum of the array loader's cycles of its Program Loads"),
        Register("seq_entries", 32, "ro", doc="kernels completed"),
        Register("seq_program_loads", 32, "ro", doc="Program Loads issued (resident programs are skipped)"),
    ]
    return regs


class Chip(wiring.Component):
    """The mini-RDU as the host sees it: an AXI4 data port and AXI4-Lite registers.

    An AGCU sits at each of ``agcus`` I/O positions of the tile array: its
    read stream enters the fabric there, the fabric's vector output there is
    its write stream, and the fabric's scalar output there is its runtime
    base. A further AGCU of one lane is the program loader: it streams a
    bitstream from memory into the array's configuration loader. The copy
    engine, the host port and every AGCU share the TLN in front of the HBM
    and DDR controllers.

    Kernel launch follows the SN40L's three commands (docs/chip.md): Program
    Load (``program`` and ``program_start``), Argument Load (each AGCU's
    ``agcuK_read`` / ``agcuK_write`` patterns and ``kernel_enable``) and
    Execute (``kernel_start``); the kernel is done when every enabled AGCU
    direction is. The launch sequencer does all three for each entry of a
    launch list in memory (``seq_list``, ``seq_start``), reading it through
    a second one-lane AGCU; while it runs it drives the kernel start and the
    AGCU patterns instead of the registers.

    Parameters
    ----------
    array_params : ArrayParams
    mem_params : MemParams
    agcus : tuple of (side, col)
        I/O positions with an AGCU, ``side`` ``"t"`` or ``"b"``.
    pcu_tail_ops, pcu_post_ops
        As :class:`hw.tile.array.TileArray`.
    host_slices : bool
        Put an AXI register slice (:class:`hw.mem.axi_slice.AxiSlice`) on
        every channel of both host buses, between the top-level ports and
        the memory system and register bank, so that no logic beyond the
        slices' input registers reads a top-level port: host accesses take
        one more cycle each way; kernels are unchanged. Off, the ports feed
        the memory system and the registers directly.

    Attributes
    ----------
    s_axi_* : AXI4 slave, data (address bit ``addr_bits`` selects DDR)
    s_axil_* : AXI4-Lite slave, the registers of :func:`chip_registers`
    kernel_done, program_done, copy_done, seq_done : Out(1)
        Levels for a testbench to await instead of polling registers.
    """

    def __init__(self, array_params, mem_params, *, agcus=None, pcu_tail_ops=ALL_TAIL_OPS,
                 pcu_post_ops=POST_OPS, host_slices=True):
        if not isinstance(host_slices, bool):
            raise ValueError(f"host_slices must be a bool, not {host_slices!r}")
        if not isinstance(array_params, ArrayParams):
            raise ValueError(f"array_params must be an ArrayParams, not {array_params!r}")
        if not isinstance(mem_params, MemParams):
            raise ValueError(f"mem_params must be a MemParams, not {mem_params!r}")
        agcus = all_io_positions(array_params) if agcus is None else tuple(agcus)
        valid = set(all_io_positions(array_params))
        for position in agcus:
            if position not in valid:
                raise ValueError(f"AGCU position {position!r} is not an I/O position of a {array_params.rows}x"
                                 f"{array_params.cols} array; positions are (side 't' or 'b', column)")
        if len(set(agcus)) != len(agcus):
            raise ValueError(f"AGCU positions repeat: {agcus}")
        if not agcus:
            raise ValueError("the chip needs at least one AGCU")
        self.array_params, self.mem_params, self.agcus = array_params, mem_params, agcus
        self.pcu_tail_ops, self.pcu_post_ops = pcu_tail_ops, pcu_post_ops
        self.host_slices = host_slices
        self.registers = chip_registers(array_params, mem_params, agcus)
        csr_bytes = 4 * sum(r.words for r in self.registers)
        self.csr_addr_bits = max(3, (csr_bytes - 1).bit_length())
        self.axi_members = axi4_slave_members(id_bits=HOST_ID_BITS, addr_bits=mem_params.addr_bits + 1,
                                              data_bytes=mem_params.word_bytes)
        self.axil_members = axil_slave_members(addr_bits=self.csr_addr_bits)
        super().__init__({**self.axi_members, **self.axil_members, "kernel_done": Out(1), "program_done": Out(1),
                          "copy_done": Out(1), "seq_done": Out(1)})

    def elaborate(self, platform):
        m = Module()
        A, P = self.array_params, self.mem_params
        m.submodules.array = array = TileArray(A, pcu_tail_ops=self.pcu_tail_ops, pcu_post_ops=self.pcu_post_ops)
        m.submodules.csr = csr = CsrBank(self.registers, addr_bits=self.csr_addr_bits)
        # AGCUs 0..n-1 at the I/O positions, AGCU n the one-lane program loader, AGCU n+1 the
        # sequencer's one-lane list reader.
        n = len(self.agcus)
        m.submodules.memory = mem = MemorySystem(P, lanes=(A.lanes,) * n + (1, 1))
        m.submodules.sequencer = seq = Sequencer(P, agcus=n)
        connect_host_buses(m, self, axi=mem, axil=csr, axi_members=self.axi_members,
                           axil_members=self.axil_members, slices=self.host_slices)

        # While the sequencer runs, kernel starts and AGCU patterns are its own, not the registers'.
        kernel_start, kernel_enable = Signal(), Signal.like(csr.kernel_enable)
        m.d.comb += [kernel_start.eq(Mux(seq.active, seq.kernel_start, csr.kernel_start)),
                     kernel_enable.eq(Mux(seq.active, seq.kernel_enable, csr.kernel_enable)),
                     array.restart.eq(kernel_start)]
        for k, (side, col) in enumerate(self.agcus):
            name = lambda port: getattr(array, io_port_name(side, col, port))
            wiring.connect(m, getattr(mem, f"a{k}_vo"), name("vo0"))
            wiring.connect(m, name("vi0"), getattr(mem, f"a{k}_vi"))
            wiring.connect(m, name("si0"), getattr(mem, f"a{k}_si"))
            cfg, status = getattr(mem, f"a{k}_cfg"), getattr(mem, f"a{k}_status")
            m.d.comb += [
                cfg.read.eq(Mux(seq.active, seq.reads[k], getattr(csr, f"agcu{k}_read"))),
                cfg.write.eq(Mux(seq.active, seq.writes[k], getattr(csr, f"agcu{k}_write"))),
                cfg.read.start.eq(kernel_start & kernel_enable[2 * k]),
                cfg.write.start.eq(kernel_start & kernel_enable[2 * k + 1]),
                getattr(csr, f"agcu{k}_read_status").eq(status.read),
                getattr(csr, f"agcu{k}_write_status").eq(status.write),
            ]

        loader_vo, loader_cfg, loader_status = (getattr(mem, f"a{n}_{p}") for p in ("vo", "cfg", "status"))
        list_vo, list_cfg, list_status = (getattr(mem, f"a{n + 1}_{p}") for p in ("vo", "cfg", "status"))
        wiring.connect(m, list_vo, seq.words)
        m.d.comb += [
            seq.start.eq(csr.seq_start), seq.list.eq(csr.seq_list), seq.token.eq(csr.seq_token),
            seq.pos.eq(csr.seq_pos),
            list_cfg.read.eq(seq.list_cfg), seq.list_status.eq(list_status.read),
            seq.host_program.eq(csr.program), seq.host_program.start.eq(csr.program_start),
            seq.loader_status.eq(loader_status.read), seq.config_busy.eq(array.config_busy),
            seq.config_status.eq(array.config_status), seq.config_loads_ok.eq(array.config_loads_ok),
            seq.config_load_cycles.eq(array.config_load_cycles),
            csr.seq_status.eq(seq.status), csr.seq_enable.eq(seq.enable), csr.seq_list_status.eq(list_status.read),
            csr.seq_cycles.eq(seq.cycles), csr.seq_kernel_cycles.eq(seq.kernel_total),
            csr.seq_program_cycles.eq(seq.program_cycles), csr.seq_entries.eq(seq.entries),
            csr.seq_program_loads.eq(seq.program_loads), self.seq_done.eq(seq.done),
        ]
        m.d.comb += [
            array.config.valid.eq(loader_vo.valid),
            array.config.payload.eq(loader_vo.payload.data[0]),
            loader_vo.ready.eq(array.config.ready),
            loader_cfg.read.eq(seq.loader),
            csr.program_status.eq(loader_status.read),
            self.program_done.eq(loader_status.read.done & ~array.config_busy),
            csr.config_status.eq(array.config_status),
            csr.config_load_cycles.eq(array.config_load_cycles),
            csr.config_loads.eq(Cat(array.config_loads_ok, array.config_loads_refused)),
            mem.copy_cfg.eq(csr.copy),
            mem.copy_cfg.start.eq(csr.copy_start),
            csr.copy_status.eq(mem.copy_status),
            self.copy_done.eq(mem.copy_status.done),
            csr.hbm_stats.eq(mem.hbm_stats),
            csr.ddr_stats.eq(mem.ddr_stats),
            csr.host_stats.eq(mem.host_stats),
        ]

        cycle = Signal(COUNTER_BITS)
        m.d.sync += cycle.eq(cycle + 1)
        m.d.comb += csr.cycle.eq(cycle)

        # A kernel runs from the start pulse until every enabled direction is done.
        statuses = [getattr(mem, f"a{k}_status") for k in range(n)]
        enabled = Signal.like(csr.kernel_enable)
        done_bits = Cat(*(Cat(s.read.done, s.write.done) for s in statuses))
        error_bits = Cat(*(Cat(s.read.error, s.write.error) for s in statuses))
        busy, finished, cycles, last = Signal(), Signal(), Signal(32), Signal()
        m.d.comb += last.eq(busy & ((done_bits & enabled) == enabled))
        with m.If(kernel_start):
            m.d.sync += [enabled.eq(kernel_enable), busy.eq(1), finished.eq(0), cycles.eq(0)]
        with m.Elif(busy):
            m.d.sync += cycles.eq(cycles + 1)
            with m.If(last):
                m.d.sync += [busy.eq(0), finished.eq(1)]
        m.d.comb += [
            seq.kernel_busy.eq(busy), seq.kernel_last.eq(last), seq.kernel_error.eq((error_bits & enabled).any()),
            seq.kernel_cycles.eq(cycles),
            csr.kernel_status.eq(Cat(busy, finished, (error_bits & enabled).any())),
            csr.kernel_cycles.eq(cycles),
            self.kernel_done.eq(finished),
        ]
        for i in range(A.rows * A.cols):
            m.d.comb += [getattr(csr, f"unit{i}_busy").eq(array.busy_cycles[i]),
                         getattr(csr, f"unit{i}_stall").eq(array.stall_cycles[i])]
        return m
