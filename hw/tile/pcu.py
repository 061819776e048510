"""Pattern Compute Unit: SIMD stages, tail, cross-lane reduction, systolic mode.

See docs/pcu.md for the configuration fields and the kernels they express.
"""

from types import SimpleNamespace

from amaranth import Module, Signal, Mux, Cat, Value
from amaranth.lib import data, enum, fifo, wiring
from amaranth.lib.wiring import In, Out

from hw.arith.add import fp32_add_datapath, Fp32Add
from hw.arith.cmp import fp32_cmp_datapath, Fp32Cmp, CmpResult
from hw.arith.mul import fp32_mul_datapath, Fp32Mul
from hw.arith.pipeline import Pipeline
from hw.arith.tail import TailOp, tail_latency, tail_datapath
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


def _compare(m, reg, a, b):
    """fp32 max/min/flags as a CmpResult view (``Fp32Cmp.LATENCY`` cycles)."""
    return data.View(CmpResult, fp32_cmp_datapath(m, reg, a, b))


def _delay(reg, value, cycles, name):
    for k in range(cycles):
        value = reg(value, name=f"{name}_d{k}")
    return value


def _stage_lane(m, reg, cfg, regs, s0, s1, name):
    """One SIMD stage in one lane; returns the lane's registers ``stage_latency()`` later."""
    def pick(sel, which):
        value = Signal(32, name=f"{name}_{which}")
        with m.Switch(sel):
            for k in range(REGS):
                with m.Case(k):
                    m.d.comb += value.eq(regs[k])
            with m.Case(Src.S0):
                m.d.comb += value.eq(s0)
            with m.Case(Src.S1):
                m.d.comb += value.eq(s1)
            with m.Case(Src.CONST):
                m.d.comb += value.eq(cfg.const)
            with m.Case(Src.ZERO):
                m.d.comb += value.eq(0)
        return value

    a, b, c = pick(cfg.a, "a"), pick(cfg.b, "b"), pick(cfg.c, "c")
    lm, la = Fp32Mul.LATENCY, Fp32Add.LATENCY
    product = fp32_mul_datapath(m, reg, a, b)
    op1 = _delay(reg, cfg.op, lm, f"{name}_op")
    a1, b1, c1 = (_delay(reg, v, lm, f"{name}_{n}") for v, n in ((a, "a"), (b, "b"), (c, "c")))
    x = Signal(32, name=f"{name}_x")
    y = Signal(32, name=f"{name}_y")
    m.d.comb += [
        x.eq(Mux((op1 == Op.MUL) | (op1 == Op.FMA), product, a1)),
        y.eq(Mux(op1 == Op.FMA, c1, b1)),
    ]
    total = fp32_add_datapath(m, reg, x, y, op1 == Op.SUB)
    compare = _compare(m, reg, x, y)
    biggest = _delay(reg, compare.max, la - Fp32Cmp.LATENCY, f"{name}_max")
    smallest = _delay(reg, compare.min, la - Fp32Cmp.LATENCY, f"{name}_min")
    op2 = _delay(reg, op1, la, f"{name}_op2")
    x2 = _delay(reg, x, la, f"{name}_x2")
    result = Signal(32, name=f"{name}_result")
    with m.Switch(op2):
        with m.Case(Op.ADD, Op.SUB, Op.FMA):
            m.d.comb += result.eq(total)
        with m.Case(Op.MAX):
            m.d.comb += result.eq(biggest)
        with m.Case(Op.MIN):
            m.d.comb += result.eq(smallest)
        with m.Default():
            m.d.comb += result.eq(x2)
    dst = _delay(reg, cfg.dst, lm + la, f"{name}_dst")
    held = [_delay(reg, r, lm + la, f"{name}_r{k}") for k, r in enumerate(regs)]
    return [Mux(dst == k, result, held[k]) for k in range(REGS)]


def reduce_tree(m, reg, op, values, *, name):
    """Pairwise tree over ``values`` (lane 0 with 1, 2 with 3, ...); ``Fp32Add.LATENCY`` per level.

    ``op`` is a Reduce value; returns the root (SUM or MAX of the lanes).
    """
    la = Fp32Add.LATENCY
    level = 0
    while len(values) > 1:
        op_next = _delay(reg, op, la, f"{name}_l{level}_op")
        nxt = []
        for k in range(0, len(values), 2):
            lhs, rhs = values[k], values[k + 1]
            total = fp32_add_datapath(m, reg, lhs, rhs, 0)
            biggest = _delay(reg, _compare(m, reg, lhs, rhs).max, la - Fp32Cmp.LATENCY,
                             f"{name}_l{level}_{k}_max")
            nxt.append(Mux(op_next == Reduce.MAX, biggest, total))
        values, op = nxt, op_next
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
        })

    @staticmethod
    def latency(ops=POST_OPS):
        return ScalarPost.SCALE_LATENCY + tail_latency(ops) + 1

    def elaborate(self, platform):
        m = Module()
        latency = self.latency(self.ops)
        pipe = Pipeline(m, self.i, self.o, latency=latency)
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

    Attributes
    ----------
    vi0, vi1, vi2 : In(vector stream)
    si0, si1 : In(scalar stream)
    vo0 : Out(vector stream)
    so0 : Out(scalar stream)
    cfg : In(pcu_config_layout(params))
    busy_cycles, stall_cycles, firings : Out(32)
    """

    def __init__(self, params, *, tail_ops=ALL_TAIL_OPS, post_ops=POST_OPS):
        if not isinstance(params, ArrayParams):
            raise TypeError(f"params must be an ArrayParams, not {params!r}")
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
        p = self.params
        L, S = p.lanes, p.stages
        cfg = self.cfg
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

        # Scalar operands, latched per group when configured so.
        s_val = [Signal(32, name=f"s{k}_value") for k in range(2)]
        s_need = [Signal(init=1, name=f"s{k}_need") for k in range(2)]
        s_mode = [cfg.s0, cfg.s1]

        group_last = Signal()
        with m.Switch(cfg.group_src):
            for k in range(3):
                with m.Case(k):
                    m.d.comb += group_last.eq(vin[k][1].last)

        # Join: every consumed input present (and, per group, the scalars).
        vec_ok = Cat(*[~cfg.inputs[k] | vin[k][0].r_rdy for k in range(3)]).all()
        scal_take = [Signal(name=f"s{k}_take") for k in range(2)]
        for k in range(2):
            m.d.comb += scal_take[k].eq((s_mode[k] == ScalarIn.PER_FIRING) |
                                        ((s_mode[k] == ScalarIn.PER_GROUP) & s_need[k]))
        scal_ok = Cat(*[~scal_take[k] | sin[k][0].r_rdy for k in range(2)]).all()

        drain_row = Signal(range(S + 1))
        draining = drain_row != 0
        fire = Signal()
        # An all-zero record consumes no input: the unit stays idle until configured.
        m.d.comb += fire.eq((cfg.inputs != 0) & vec_ok & scal_ok & pipe.advance & ~draining)

        for k in range(3):
            m.d.comb += vin[k][0].r_en.eq(fire & cfg.inputs[k])
        for k in range(2):
            m.d.comb += sin[k][0].r_en.eq(fire & scal_take[k])
            cur = Mux(scal_take[k], sin[k][1].data, s_val[k])
            with m.If(fire):
                m.d.sync += s_val[k].eq(cur)
                with m.If(s_mode[k] == ScalarIn.PER_GROUP):
                    m.d.sync += s_need[k].eq(group_last)

        # Systolic accumulators, one fused update per firing (single-cycle model
        # of an output-stationary array: see docs/pcu.md).
        acc = [[Signal(32, name=f"acc_{r}_{l}") for l in range(L)] for r in range(S)]
        comb = lambda value, name=None: value
        drain_vec = Signal(data.ArrayLayout(32, L))
        with m.Switch(drain_row):
            for r in range(S):
                with m.Case(r + 1):
                    m.d.comb += [drain_vec[l].eq(acc[r][l]) for l in range(L)]
        rows = cfg.systolic_rows
        with m.If(cfg.systolic):
            with m.If(fire):
                for r in range(S):
                    for l in range(L):
                        update = fp32_add_datapath(m, comb, fp32_mul_datapath(m, comb, vin[0][1].data[r],
                                                                               vin[1][1].data[l]), acc[r][l], 0)
                        m.d.sync += acc[r][l].eq(update)
                with m.If(group_last & (rows != 0)):
                    m.d.sync += drain_row.eq(1)
            with m.Elif(draining & pipe.advance):
                m.d.sync += drain_row.eq(Mux(drain_row == rows, 0, drain_row + 1))
                with m.If(drain_row == rows):
                    m.d.sync += [acc[r][l].eq(0) for r in range(S) for l in range(L)]

        # What enters the pipeline.
        start_valid = Mux(cfg.systolic, draining, fire)
        m.d.comb += pipe_in.valid.eq(start_valid)
        regs = [[Signal(32, name=f"in_r{k}_l{l}") for k in range(REGS)] for l in range(L)]
        for l in range(L):
            with m.If(cfg.systolic):
                m.d.comb += regs[l][0].eq(drain_vec[l])
            with m.Else():
                for k in range(3):
                    m.d.comb += regs[l][k].eq(Mux(cfg.inputs[k], vin[k][1].data[l], 0))
        s_now = [Mux(scal_take[k], sin[k][1].data, s_val[k]) for k in range(2)]
        element_last = Mux(cfg.systolic, drain_row == rows, group_last)

        s_pipe = list(s_now)
        last_pipe = element_last
        for s in range(S):
            stage_cfg = cfg.stages[s]
            regs = [_stage_lane(m, reg, stage_cfg, regs[l], s_pipe[0], s_pipe[1], f"st{s}_l{l}") for l in range(L)]
            s_pipe = [_delay(reg, v, stage_latency(), f"st{s}_s{k}") for k, v in enumerate(s_pipe)]
            last_pipe = _delay(reg, last_pipe, stage_latency(), f"st{s}_last")

        out = [Mux(cfg.out_src == 0, regs[l][0], Mux(cfg.out_src == 1, regs[l][1],
                                                       Mux(cfg.out_src == 2, regs[l][2], regs[l][3])))
               for l in range(L)]
        out = [tail_datapath(m, reg, cfg.tail_op, out[l], ops=self.tail_ops, name=f"tail_l{l}") for l in range(L)]
        last_pipe = _delay(reg, last_pipe, tail_latency(self.tail_ops), "tail_last")

        rl = reduce_latency(p)
        reduced = reduce_tree(m, reg, cfg.reduce, out, name="red")
        vo_lanes = [_delay(reg, out[l], rl, f"vo_l{l}") for l in range(L)]
        last_pipe = _delay(reg, last_pipe, rl, "red_last")

        # End stage: vo0 register, group fold and the scalar post-processor.
        m.submodules.post = post = ScalarPost(ops=self.post_ops)
        m.d.comb += [post.scale.eq(cfg.so_scale), post.bias.eq(cfg.so_bias), post.func.eq(cfg.so_func)]
        wiring.connect(m, post.o, wiring.flipped(self.so0))
        vo_free = ~self.vo0.valid | self.vo0.ready
        m.d.comb += pipe_out.ready.eq(vo_free & post.i.ready)
        take = pipe_out.valid & pipe_out.ready
        with m.If(self.vo0.valid & self.vo0.ready):
            m.d.sync += self.vo0.valid.eq(0)
        with m.If(take & cfg.vo):
            m.d.sync += [self.vo0.valid.eq(1), self.vo0.payload.last.eq(last_pipe)]
            m.d.sync += [self.vo0.payload.data[l].eq(vo_lanes[l]) for l in range(L)]

        fold = Signal(32)
        fold_valid = Signal()
        folded = Mux(fold_valid, Mux(cfg.reduce == Reduce.MAX, _compare(m, comb, fold, reduced).max,
                                     fp32_add_datapath(m, comb, fold, reduced, 0)), reduced)
        m.d.comb += post.i.valid.eq(0)
        with m.If(take):
            with m.If(cfg.so == ScalarOut.EVERY):
                m.d.comb += [post.i.valid.eq(1), post.i.payload.data.eq(reduced),
                             post.i.payload.last.eq(last_pipe)]
            with m.Elif(cfg.so == ScalarOut.GROUP):
                with m.If(last_pipe):
                    m.d.comb += [post.i.valid.eq(1), post.i.payload.data.eq(folded), post.i.payload.last.eq(1)]
                    m.d.sync += fold_valid.eq(0)
                with m.Else():
                    m.d.sync += [fold.eq(folded), fold_valid.eq(1)]

        # Busy: a firing or a drain step. Stalled: work was waiting (an input
        # holding data, or a drain) but nothing moved.
        busy = fire | (cfg.systolic & draining & pipe.advance)
        has_work = Cat(*[cfg.inputs[k] & vin[k][0].r_rdy for k in range(3)]).any() | draining
        with m.If(busy):
            m.d.sync += self.busy_cycles.eq(self.busy_cycles + 1)
        with m.Elif(has_work):
            m.d.sync += self.stall_cycles.eq(self.stall_cycles + 1)
        with m.If(fire):
            m.d.sync += self.firings.eq(self.firings + 1)
        return m
