"""Pattern Compute Unit: SIMD stages, tail, cross-lane reduction, systolic mode.

See docs/pcu.md for the configuration fields and the kernels they express.
"""

import functools
from types import SimpleNamespace

from amaranth import Module, Signal, Mux, Cat, Const, Value, Shape
from amaranth.hdl import ClockDomain, ClockSignal, DomainRenamer, ResetSignal
from amaranth.lib import data, enum, fifo, wiring
from amaranth.lib.wiring import In, Out

from hw.arith.add import fp32_add_datapath, Fp32Add
from hw.arith.fp import stage, wire, CANON_NAN32, INF32
from hw.arith.mul import fp32_mul_datapath, Fp32Mul
from hw.arith.pipeline import Pipeline
from hw.arith.tail import TailOp, tail_latency, tail_datapath
from hw.tile.clock_gate import check_clock_gate, clock_gate, gated_unit
from hw.tile.params import ArrayParams
from hw.tile.streams import VectorPayload, ScalarPayload, vector_stream, scalar_stream

REGS = 4


class Op(enum.Enum, shape=3):
    PASS = 0  # a
    ADD = 1   # a + b
    SUB = 2   # a - b
    MUL = 3   # a * b
    FMA = 4   # a * b + c, rounded after the product and after the sum
    MAX = 5
    MIN = 6


class Src(enum.Enum, shape=3):
    R0 = 0
    R1 = 1
    R2 = 2
    R3 = 3
    S0 = 4
    S1 = 5
    CONST = 6
    ZERO = 7


class Reduce(enum.Enum, shape=2):
    NONE = 0
    SUM = 1
    MAX = 2


class ScalarIn(enum.Enum, shape=2):
    NONE = 0
    PER_FIRING = 1  # one scalar with every firing
    PER_GROUP = 2   # one scalar at the first firing of every group


class ScalarOut(enum.Enum, shape=2):
    NONE = 0
    EVERY = 1  # the reduction of every firing
    GROUP = 2  # the reduction folded over a group, emitted at its end


StageConfig = data.StructLayout({"op": Op, "a": Src, "b": Src, "c": Src, "dst": 2, "const": 32})


@functools.lru_cache(maxsize=64)
def pcu_config_layout(params):
    """Configuration record of a PCU for ``params`` (see docs/pcu.md)."""
    return data.StructLayout({
        "systolic": 1,
        "inputs": 3,           # bit k: vi<k> is consumed by every firing
        "group_src": 2,        # the input whose `last` ends a group
        "s0": ScalarIn,
        "s1": ScalarIn,
        "stages": data.ArrayLayout(StageConfig, params.stages),
        "out_src": 2,          # the register that continues past the stages
        "tail_op": TailOp,     # applied to it; its result is vo0's vector and the reduction's input
        "reduce": Reduce,
        "vo": 1,               # emit the result of every firing on vo0
        "so": ScalarOut,
        "so_scale": 32,        # so0 = so_func(reduction * so_scale + so_bias)
        "so_bias": 32,
        "so_func": TailOp,
        "systolic_rows": range(params.stages + 1),
        "systolic_operand": 1,  # systolic: each drained row also takes a vector from vi2 into r1
    })


ALL_TAIL_OPS = tuple(op for op in TailOp if op != TailOp.NONE)
POST_OPS = (TailOp.RECIP, TailOp.RSQRT)


def stage_latency():
    """Cycles through one SIMD stage: a multiplier followed by an adder."""
    return Fp32Mul.LATENCY + Fp32Add.LATENCY


def reduce_latency(params):
    return (params.lanes.bit_length() - 1) * Fp32Add.LATENCY


def pipeline_latency(params, tail_ops=ALL_TAIL_OPS):
    """Cycles from a firing to its result at the end of the PCU pipeline."""
    return params.stages * stage_latency() + tail_latency(tail_ops) + reduce_latency(params)


def _extreme(m, a, b, want_min, name):
    """fp32 max (or min where ``want_min``) of ``a`` and ``b``, combinational.

    The same result as ``Fp32Cmp``'s ``max``/``min`` (denormals-are-zero,
    ``-0 < +0``, canonical NaN if either is NaN) in fewer statements.
    """
    def daz(x):
        return wire(m, Mux(x[23:31] == 0, Cat(Const(0, 31), x[31]), x), name=f"{name}_daz", shape=32)

    def key(x):  # unsigned, in float order
        return Mux(x[31], ~x, Cat(x[:31], Const(1, 1)))

    da, db = daz(a), daz(b)
    nan = (a[:31] > INF32) | (b[:31] > INF32)
    take_a = wire(m, (key(da) >= key(db)) ^ want_min, name=f"{name}_take_a")
    return wire(m, Mux(nan, CANON_NAN32, Mux(take_a, da, db)), name=name, shape=32)


def _delay(reg, value, cycles, name):
    for k in range(cycles):
        value = reg(value, name=f"{name}_d{k}")
    return value


def _delays(m, reg, name, entries):
    """Delay each ``(value, cycles)`` of ``entries``; return the delayed values in order.

    The values still travelling share one register per cycle (:func:`stage`),
    which keeps the Verilog short: one statement per cycle, not per value.
    """
    values = [Value.cast(v) for v, _ in entries]
    cycles = [c for _, c in entries]
    for k in range(max(cycles, default=0)):
        live = [i for i, c in enumerate(cycles) if c > k]
        for i, v in zip(live, stage(m, reg, f"{name}_d{k}", *(values[i] for i in live))):
            values[i] = v
    return values


def _select(m, sel, choices, name):
    """``choices[sel]`` as one indexed part-select (a multiplexer per choice would cost a statement each)."""
    width = max(len(Value.cast(c)) for c in choices)
    return wire(m, Cat(*choices).word_select(Value.cast(sel), width), name=name, shape=width)


def _stage(m, reg, cfg, regs, s0, s1, last, name, *, mul_reg=None, add_reg=None):
    """One SIMD stage over all lanes; returns the lanes' registers, the scalars and ``last``
    ``stage_latency()`` later.

    Operands are picked by part-selects; each lane's result is the sum (ADD,
    SUB, FMA), a comparison (MAX, MIN) or its operand x (PASS, and MUL, whose
    product is x), written to register ``dst``. The multipliers' and adders'
    registers are made by ``mul_reg`` and ``add_reg`` (default ``reg``).
    """
    mul_reg = reg if mul_reg is None else mul_reg
    add_reg = reg if add_reg is None else add_reg
    lanes = range(len(regs))
    lm, la = Fp32Mul.LATENCY, Fp32Add.LATENCY
    sources = lambda l: [*regs[l], s0, s1, cfg.const, Const(0, 32)]
    a = [_select(m, cfg.a, sources(l), f"{name}_l{l}_a") for l in lanes]
    b = [_select(m, cfg.b, sources(l), f"{name}_l{l}_b") for l in lanes]
    c = [_select(m, cfg.c, sources(l), f"{name}_l{l}_c") for l in lanes]
    product = [fp32_mul_datapath(m, mul_reg, a[l], b[l]) for l in lanes]
    op1, dst1, s0, s1, last, *rest = _delays(m, reg, f"{name}_m", [
        (cfg.op, lm), (cfg.dst, lm), (s0, lm), (s1, lm), (last, lm),
        *((v, lm) for l in lanes for v in (a[l], b[l], c[l], *regs[l]))])
    op1 = wire(m, op1, name=f"{name}_op1")
    per = 3 + REGS
    a1, b1, c1 = ([rest[per * l + k] for l in lanes] for k in range(3))
    held1 = [rest[per * l + 3:per * (l + 1)] for l in lanes]
    mul_x = wire(m, (op1 == Op.MUL) | (op1 == Op.FMA), name=f"{name}_mul_x")
    fma = wire(m, op1 == Op.FMA, name=f"{name}_fma")
    sub = wire(m, op1 == Op.SUB, name=f"{name}_sub")
    x = [wire(m, Mux(mul_x, product[l], a1[l]), name=f"{name}_l{l}_x") for l in lanes]
    y = [wire(m, Mux(fma, c1[l], b1[l]), name=f"{name}_l{l}_y") for l in lanes]
    total = [fp32_add_datapath(m, add_reg, x[l], y[l], sub) for l in lanes]
    is_min = wire(m, op1 == Op.MIN, name=f"{name}_is_min")
    extreme = [_extreme(m, x[l], y[l], is_min, f"{name}_l{l}_ext") for l in lanes]
    op2, dst2, s0, s1, last, *rest = _delays(m, reg, f"{name}_a", [
        (op1, la), (dst1, la), (s0, la), (s1, la), (last, la),
        *((v, la) for l in lanes for v in (x[l], extreme[l], *held1[l]))])
    out = []
    for l in lanes:
        x2, ext, held = rest[(2 + REGS) * l], rest[(2 + REGS) * l + 1], rest[(2 + REGS) * l + 2:(2 + REGS) * (l + 1)]
        result = _select(m, op2, [x2, total[l], total[l], x2, total[l], ext, ext, x2], f"{name}_l{l}_result")
        out.append([wire(m, Mux(dst2 == k, result, held[k]), name=f"{name}_l{l}_r{k}") for k in range(REGS)])
    return out, s0, s1, last


def reduce_tree(m, reg, op, values, *, name):
    """Pairwise tree over ``values`` (lane 0 with 1, 2 with 3, ...); ``Fp32Add.LATENCY`` per level.

    ``op`` is a Reduce value; returns the root (SUM or MAX of the lanes).
    """
    la = Fp32Add.LATENCY
    level = 0
    while len(values) > 1:
        pairs = range(0, len(values), 2)
        totals = [fp32_add_datapath(m, reg, values[k], values[k + 1], 0) for k in pairs]
        maxima = [_extreme(m, values[k], values[k + 1], 0, f"{name}_l{level}_{k}_max") for k in pairs]
        op, *maxima = _delays(m, reg, f"{name}_l{level}", [(op, la), *((v, la) for v in maxima)])
        is_max = wire(m, op == Reduce.MAX, name=f"{name}_l{level}_is_max")
        values = [wire(m, Mux(is_max, biggest, total), name=f"{name}_l{level}_{k}")
                  for k, (biggest, total) in enumerate(zip(maxima, totals))]
        level += 1
    return values[0]


class ScalarPost(wiring.Component):
    """so0's post-processing: ``func(x * scale + bias)``, one scalar per cycle.

    The scale and bias come from the PCU configuration, so a reduction becomes
    a mean, a reciprocal sum (softmax) or ``rsqrt(mean + eps)`` (RMSNorm)
    without another unit.
    """

    SCALE_LATENCY = Fp32Mul.LATENCY + Fp32Add.LATENCY

    def __init__(self, *, ops=POST_OPS):
        self.ops = tuple(ops)
        super().__init__({
            "i": In(scalar_stream()), "o": Out(scalar_stream()),
            "scale": In(32), "bias": In(32), "func": In(TailOp),
            "busy": Out(1),
        })

    @staticmethod
    def latency(ops=POST_OPS):
        return ScalarPost.SCALE_LATENCY + tail_latency(ops) + 1

    def elaborate(self, platform):
        m = Module()
        latency = self.latency(self.ops)
        pipe = Pipeline(m, self.i, self.o, latency=latency)
        m.d.comb += self.busy.eq(Cat(*pipe.stage_valid).any())
        x = self.i.payload.data
        scaled = fp32_add_datapath(m, pipe.reg, fp32_mul_datapath(m, pipe.reg, x, self.scale),
                                   _delay(pipe.reg, self.bias, Fp32Mul.LATENCY, "post_bias"), 0)
        result = tail_datapath(m, pipe.reg, _delay(pipe.reg, self.func, self.SCALE_LATENCY, "post_func"), scaled,
                               ops=self.ops, name="post_tail")
        last = _delay(pipe.reg, self.i.payload.last, self.SCALE_LATENCY + tail_latency(self.ops), "post_last")
        m.d.comb += [self.o.payload.data.eq(pipe.reg(result, name="post_out")),
                     self.o.payload.last.eq(pipe.reg(last, name="post_last_out"))]
        return m


class Pcu(wiring.Component):
    """A Pattern Compute Unit.

    Parameters
    ----------
    params : ArrayParams
        ``lanes`` and ``stages`` size the datapath; ``unit_fifo_depth`` the
        input FIFOs.
    tail_ops, post_ops : tuple of TailOp
        The tail functions of the lanes and of so0's post-processor.
    clock_gate : bool
        Run the unit's registers on a gated clock (:mod:`hw.tile.clock_gate`)
        that ticks only in cycles with work: an input offered, data in a
        FIFO, the pipeline or an output, a systolic drain, a configuration
        change, or reset. The configuration is then held in a register of
        the gated domain, one cycle behind ``cfg`` (a unit is idle when its
        record changes: a Program Load or a kernel's start). Parts of the
        datapath that a record may leave unused (each stage's multipliers and
        adders, the tail functions, the reduction, the post unit) have gates
        of their own inside it (docs/pcu.md). Off, the unit is clocked every
        cycle and reads ``cfg`` directly. Results and cycle counts are the
        same either way.

    Attributes
    ----------
    vi0, vi1, vi2 : In(vector stream)
    si0, si1 : In(scalar stream)
    vo0 : Out(vector stream)
    so0 : Out(scalar stream)
    cfg : In(pcu_config_layout(params))
    busy_cycles, stall_cycles, firings : Out(32)
    """

    def __init__(self, params, *, tail_ops=ALL_TAIL_OPS, post_ops=POST_OPS, clock_gate=True):
        if not isinstance(params, ArrayParams):
            raise TypeError(f"params must be an ArrayParams, not {params!r}")
        check_clock_gate(clock_gate)
        self.clock_gate = clock_gate
        for name, ops in (("tail_ops", tail_ops), ("post_ops", post_ops)):
            bad = [op for op in ops if not isinstance(op, TailOp) or op == TailOp.NONE]
            if bad:
                raise ValueError(f"{name} must list TailOp functions (not NONE), got {bad}")
        self.tail_ops, self.post_ops = tuple(tail_ops), tuple(post_ops)
        if params.stages > params.lanes:
            raise ValueError(f"systolic mode needs stages <= lanes, got {params.stages} stages and "
                             f"{params.lanes} lanes")
        self.params = params
        v, s = vector_stream(params.lanes), scalar_stream()
        super().__init__({
            "vi0": In(v), "vi1": In(v), "vi2": In(v), "si0": In(s), "si1": In(s),
            "vo0": Out(v), "so0": Out(s),
            "cfg": In(pcu_config_layout(params)),
            "busy_cycles": Out(32), "stall_cycles": Out(32), "firings": Out(32),
        })

    def elaborate(self, platform):
        if not self.clock_gate:
            return self._unit(self.cfg)[0]
        held = Signal(pcu_config_layout(self.params), name="cfg_held", reset_less=True)
        unit, active = self._unit(held)
        offered = Cat(*(port.valid for port in (self.vi0, self.vi1, self.vi2, self.si0, self.si1))).any()
        return gated_unit(unit, cfg=self.cfg, held=held, active=active, offered=offered)

    def _unit(self, cfg):
        """The unit's logic in the ``sync`` domain, configured by ``cfg``; returns it and its ``active``
        signal: work in flight (data in a FIFO, the pipeline or an output, or a systolic drain)."""
        p = self.params
        L, S = p.lanes, p.stages
        m = Module()

        vin = []
        for k, port in enumerate((self.vi0, self.vi1, self.vi2)):
            q = fifo.SyncFIFOBuffered(width=len(Value.cast(port.payload)), depth=p.unit_fifo_depth)
            m.submodules[f"vi{k}_fifo"] = q
            m.d.comb += [q.w_data.eq(port.payload), q.w_en.eq(port.valid), port.ready.eq(q.w_rdy)]
            vin.append((q, data.View(VectorPayload(L), q.r_data)))
        sin = []
        for k, port in enumerate((self.si0, self.si1)):
            q = fifo.SyncFIFOBuffered(width=33, depth=p.unit_fifo_depth)
            m.submodules[f"si{k}_fifo"] = q
            m.d.comb += [q.w_data.eq(port.payload), q.w_en.eq(port.valid), port.ready.eq(q.w_rdy)]
            sin.append((q, data.View(ScalarPayload, q.r_data)))

        # Pipeline control: the "input" handshake is the firing, the "output"
        # handshake is the end stage accepting a result.
        pipe_in = SimpleNamespace(valid=Signal(name="fire_valid"), ready=Signal(name="fire_ready"))
        pipe_out = SimpleNamespace(valid=Signal(name="end_valid"), ready=Signal(name="end_ready"))
        pipe = Pipeline(m, pipe_in, pipe_out, latency=pipeline_latency(p, self.tail_ops))
        reg = pipe.reg

        def part_reg(domain, used):
            """Pipeline registers of a part of the datapath whose results only records with ``used`` read.

            Gated, they run on their own clock, which ticks as the pipeline advances under such a record
            (the record is constant while work is in flight); they then load their input unconditionally.
            """
            if not self.clock_gate:
                return reg
            m.domains += ClockDomain(domain, local=True, reset_less=True)
            m.d.comb += ClockSignal(domain).eq(clock_gate(m, pipe.advance & used, name=f"{domain}_gclk"))

            def part(value, *, name=None):
                value = Value.cast(value)
                r = Signal(Shape.cast(value.shape()), name=name, reset_less=True)
                m.d[domain] += r.eq(value)
                return r
            return part

        # Scalar operands, latched per group when configured so.
        s_val = [Signal(32, name=f"s{k}_value") for k in range(2)]
        s_need = [Signal(init=1, name=f"s{k}_need") for k in range(2)]
        s_mode = [cfg.s0, cfg.s1]

        group_last = wire(m, Cat(*(vin[k][1].last for k in range(3)), Const(0, 1)).bit_select(cfg.group_src, 1),
                          name="group_last")

        # Join: every consumed input present (and, per group, the scalars). A systolic operand on vi2
        # joins the drain instead of the firings.
        operand = cfg.systolic_operand
        fire_inputs = Cat(cfg.inputs[0], cfg.inputs[1], cfg.inputs[2] & ~operand)
        vec_ok = Cat(*[~fire_inputs[k] | vin[k][0].r_rdy for k in range(3)]).all()
        scal_take = [wire(m, (s_mode[k] == ScalarIn.PER_FIRING) | ((s_mode[k] == ScalarIn.PER_GROUP) & s_need[k]),
                          name=f"s{k}_take") for k in range(2)]
        scal_ok = Cat(*[~scal_take[k] | sin[k][0].r_rdy for k in range(2)]).all()

        drain_row = Signal(range(S + 1))
        draining = wire(m, drain_row != 0, name="draining")
        drain_step = wire(m, cfg.systolic & draining & pipe.advance & (~operand | vin[2][0].r_rdy), name="drain_step")
        fire = Signal()
        # A record that consumes no input per firing (all-zero, or only a systolic operand) never fires:
        # the unit stays idle until configured.
        m.d.comb += fire.eq((fire_inputs != 0) & vec_ok & scal_ok & pipe.advance & ~draining)

        s_now = [wire(m, Mux(scal_take[k], sin[k][1].data, s_val[k]), name=f"s{k}_now") for k in range(2)]
        for k in range(2):
            m.d.comb += vin[k][0].r_en.eq(fire & cfg.inputs[k])
        m.d.comb += vin[2][0].r_en.eq(fire & fire_inputs[2] | drain_step & operand)
        for k in range(2):
            m.d.comb += sin[k][0].r_en.eq(fire & scal_take[k])
            with m.If(fire):
                m.d.sync += s_val[k].eq(s_now[k])
                with m.If(s_mode[k] == ScalarIn.PER_GROUP):
                    m.d.sync += s_need[k].eq(group_last)

        # Systolic accumulators, one fused update per firing (single-cycle model
        # of an output-stationary array: see docs/pcu.md). All of them are one
        # register; the updates are built outside the conditions, so only the
        # register's load is conditional.
        acc_all = Signal(32 * S * L, name="acc")
        acc = [[acc_all.word_select(r * L + l, 32) for l in range(L)] for r in range(S)]
        comb = lambda value, name=None: value
        update = Cat(*(fp32_add_datapath(m, comb, fp32_mul_datapath(m, comb, vin[0][1].data[r], vin[1][1].data[l]),
                                         acc[r][l], 0)
                       for r in range(S) for l in range(L)))
        drain_vec = wire(m, Cat(Const(0, 32 * L), acc_all).word_select(drain_row, 32 * L), name="drain_vec")
        rows = cfg.systolic_rows
        with m.If(cfg.systolic):
            with m.If(fire):
                m.d.sync += acc_all.eq(update)
                with m.If(group_last & (rows != 0)):
                    m.d.sync += drain_row.eq(1)
            with m.Elif(drain_step):
                m.d.sync += drain_row.eq(Mux(drain_row == rows, 0, drain_row + 1))
                with m.If(drain_row == rows):
                    m.d.sync += acc_all.eq(0)

        # What enters the pipeline.
        start_valid = Mux(cfg.systolic, drain_step, fire)
        m.d.comb += pipe_in.valid.eq(start_valid)
        regs = []
        for l in range(L):
            inputs = [Mux(cfg.inputs[k], vin[k][1].data[l], 0) for k in range(3)]
            drained = [drain_vec.word_select(l, 32), Mux(operand, vin[2][1].data[l], 0), 0, 0]
            regs.append([wire(m, Mux(cfg.systolic, drained[k], inputs[k] if k < 3 else 0), name=f"in_r{k}_l{l}",
                              shape=32) for k in range(REGS)])
        # A systolic operand's `last` flags become the outputs' (a residual stream keeps its groups).
        element_last = Mux(cfg.systolic, Mux(operand, vin[2][1].last, drain_row == rows), group_last)

        s_pipe = list(s_now)
        last_pipe = element_last
        for s in range(S):
            op = cfg.stages[s].op
            regs, s_pipe[0], s_pipe[1], last_pipe = _stage(
                m, reg, cfg.stages[s], regs, s_pipe[0], s_pipe[1], last_pipe, f"st{s}",
                mul_reg=part_reg(f"st{s}_mul", (op == Op.MUL) | (op == Op.FMA)),
                add_reg=part_reg(f"st{s}_add", (op == Op.ADD) | (op == Op.SUB) | (op == Op.FMA)))

        out = [_select(m, cfg.out_src, regs[l], f"out_l{l}") for l in range(L)]
        # With tail NONE only the registers carrying the operand and the output matter.
        tail_reg = part_reg("tail", cfg.tail_op != TailOp.NONE)
        out = [tail_datapath(m, tail_reg, cfg.tail_op, out[l], ops=self.tail_ops, name=f"tail_l{l}", carry=reg)
               for l in range(L)]
        last_pipe, = _delays(m, reg, "tail_last", [(last_pipe, tail_latency(self.tail_ops))])

        rl = reduce_latency(p)
        # The reduction is read only by so0 (through the fold and the post unit).
        reduced = reduce_tree(m, part_reg("red", cfg.so != ScalarOut.NONE), cfg.reduce, out, name="red")
        *vo_lanes, last_pipe = _delays(m, reg, "vo", [*((out[l], rl) for l in range(L)), (last_pipe, rl)])

        # End stage: vo0 register, group fold and the scalar post-processor.
        post = ScalarPost(ops=self.post_ops)
        if self.clock_gate:
            # The post unit ticks only with a scalar entering or inside it (or in reset); otherwise its valid
            # chain stays empty and only data registers no one reads would load.
            m.domains.post = ClockDomain("post", local=True)
            m.d.comb += [ClockSignal("post").eq(clock_gate(m, post.i.valid | post.busy | ResetSignal(),
                                                           name="post_gclk")),
                         ResetSignal("post").eq(ResetSignal())]
            m.submodules.post = DomainRenamer("post")(post)
        else:
            m.submodules.post = post
        m.d.comb += [post.scale.eq(cfg.so_scale), post.bias.eq(cfg.so_bias), post.func.eq(cfg.so_func)]
        wiring.connect(m, post.o, wiring.flipped(self.so0))
        vo_free = ~self.vo0.valid | self.vo0.ready
        m.d.comb += pipe_out.ready.eq(vo_free & post.i.ready)
        take = pipe_out.valid & pipe_out.ready
        with m.If(self.vo0.valid & self.vo0.ready):
            m.d.sync += self.vo0.valid.eq(0)
        with m.If(take & cfg.vo):
            m.d.sync += [self.vo0.valid.eq(1), self.vo0.payload.last.eq(last_pipe),
                         self.vo0.payload.data.eq(Cat(*vo_lanes))]

        fold = Signal(32)
        fold_valid = Signal()
        folded = wire(m, Mux(fold_valid, Mux(cfg.reduce == Reduce.MAX, _extreme(m, fold, reduced, 0, "fold_max"),
                                             fp32_add_datapath(m, comb, fold, reduced, 0)), reduced), name="folded")
        so_every = cfg.so == ScalarOut.EVERY
        so_group = cfg.so == ScalarOut.GROUP
        m.d.comb += [post.i.valid.eq(take & (so_every | (so_group & last_pipe))),
                     post.i.payload.data.eq(Mux(so_every, reduced, folded)),
                     post.i.payload.last.eq(last_pipe)]
        with m.If(take & so_group):
            with m.If(last_pipe):
                m.d.sync += fold_valid.eq(0)
            with m.Else():
                m.d.sync += [fold.eq(folded), fold_valid.eq(1)]

        # Busy: a firing or a drain step. Stalled: work was waiting (an input
        # holding data, or a drain, also one waiting for its vi2 operand) but nothing moved.
        busy = fire | drain_step
        has_work = Cat(*[fire_inputs[k] & vin[k][0].r_rdy for k in range(3)]).any() | draining
        with m.If(busy):
            m.d.sync += self.busy_cycles.eq(self.busy_cycles + 1)
        with m.Elif(has_work):
            m.d.sync += self.stall_cycles.eq(self.stall_cycles + 1)
        with m.If(fire):
            m.d.sync += self.firings.eq(self.firings + 1)

        queued = Cat(*(q.level != 0 for q, _ in (*vin, *sin))).any()
        active = wire(m, queued | Cat(*pipe.stage_valid).any() | post.busy | self.vo0.valid | draining,
                      name="active")
        return m, active
