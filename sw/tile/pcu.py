"""Python description of a PCU configuration: what kernels and the compiler generate into.

A :class:`PcuConfig` is plain data. :meth:`PcuConfig.validate` refuses what
the hardware cannot do, naming the field; :meth:`PcuConfig.pack` gives the
integer the hardware's ``cfg`` port holds.
"""

from dataclasses import dataclass

import numpy as np

from hw.tile.pcu import Op, Src, TailOp, Reduce, ScalarIn, ScalarOut, pcu_config_layout

REGISTERS = ("r0", "r1", "r2", "r3")
_SRC = {"r0": Src.R0, "r1": Src.R1, "r2": Src.R2, "r3": Src.R3, "s0": Src.S0, "s1": Src.S1,
        "const": Src.CONST, "zero": Src.ZERO}


def f32(value):
    """The fp32 bit pattern of a Python float (round to nearest)."""
    return int(np.array(value, dtype=np.float32).view(np.uint32))


@dataclass(frozen=True)
class Stage:
    """One SIMD stage: ``dst = op(a, b, c)`` in every lane.

    ``a``, ``b``, ``c`` name a register (``r0``-``r3``), a scalar (``s0``,
    ``s1``), ``const`` (this stage's ``const`` bits) or ``zero``.
    """

    op: str = "pass"
    a: str = "r0"
    b: str = "zero"
    c: str = "zero"
    dst: str = "r0"
    const: int = 0


PASS = Stage()


@dataclass(frozen=True)
class PcuConfig:
    """A PCU configuration; see docs/pcu.md.

    Attributes
    ----------
    inputs : tuple of int
        Vector inputs (0-2) every firing consumes; they load r0, r1, r2.
    group_src : int
        The input whose ``last`` flag ends a group.
    s0, s1 : str
        ``none``, ``per_firing`` or ``per_group``.
    stages : tuple of Stage
        At most ``params.stages``; missing stages pass.
    out_src : str
        The register that continues past the stages.
    tail : str
        Tail function (``none``, ``exp``, ``recip``, ``rsqrt``, ``sigmoid``,
        ``silu``, ``bf16``) applied to it; the result feeds vo0 and the
        reduction.
    reduce : str
        Cross-lane reduction (``none``, ``sum``, ``max``) of the result.
    vo : bool
        Emit the result of every firing on vo0.
    so : str
        ``none``, ``every`` (each firing's reduction) or ``group`` (folded
        over a group). In systolic mode the reduced things are the drained
        rows and a group ends at a drained row whose ``last`` is set (vi2's
        flag with a systolic operand, else each tile's last row).
    so_scale, so_bias : float
        so0 = so_func(reduction * so_scale + so_bias).
    so_func : str
        A tail function name.
    systolic : bool
        Output-stationary matrix mode: vi0 lanes 0..rows-1 times vi1 lanes,
        accumulated until the group ends, then ``systolic_rows`` rows drain
        through the stages and the tail.
    systolic_rows : int
        Rows drained per group in systolic mode (1..stages).
    systolic_operand : bool
        Systolic mode only: each drained row also takes one vector from vi2
        into r1 (inputs must be (0, 1, 2)), so the stages can add a bias or a
        residual, or multiply by a second stream, on the way out; vi2's
        ``last`` flags become the outputs'.
    """

    inputs: tuple[int, ...] = (0,)
    group_src: int = 0
    s0: str = "none"
    s1: str = "none"
    stages: tuple[Stage, ...] = ()
    out_src: str = "r0"
    tail: str = "none"
    reduce: str = "none"
    vo: bool = True
    so: str = "none"
    so_scale: float = 1.0
    so_bias: float = 0.0
    so_func: str = "none"
    systolic: bool = False
    systolic_rows: int = 0
    systolic_operand: bool = False

    def validate(self, params, *, tail_ops=None, post_ops=None):
        """Raise ValueError naming the first field the hardware cannot do.

        ``tail_ops`` and ``post_ops`` are the tail function names the PCU was
        built with (default: the full sets), when it was built with fewer.
        """
        def fail(field_name, why):
            raise ValueError(f"PcuConfig.{field_name}: {why}")

        if not self.inputs or any(k not in (0, 1, 2) for k in self.inputs) or len(set(self.inputs)) != len(self.inputs):
            fail("inputs", f"must name distinct vector inputs among 0, 1, 2, not {self.inputs!r}")
        if self.group_src not in self.inputs:
            fail("group_src", f"input {self.group_src} is not among the consumed inputs {self.inputs}")
        for name in ("s0", "s1"):
            if getattr(self, name) not in ("none", "per_firing", "per_group"):
                fail(name, f"must be none, per_firing or per_group, not {getattr(self, name)!r}")
        if len(self.stages) > params.stages:
            fail("stages", f"{len(self.stages)} stages given, the PCU has {params.stages}")
        for k, st in enumerate(self.stages):
            if st.op not in _OPS:
                fail(f"stages[{k}].op", f"unknown op {st.op!r}; ops: {', '.join(_OPS)}")
            for slot in ("a", "b", "c"):
                if getattr(st, slot) not in _SRC:
                    fail(f"stages[{k}].{slot}", f"unknown operand {getattr(st, slot)!r}; operands: {', '.join(_SRC)}")
            if st.dst not in REGISTERS:
                fail(f"stages[{k}].dst", f"must be a register r0-r3, not {st.dst!r}")
            if not 0 <= st.const < 1 << 32:
                fail(f"stages[{k}].const", "must be a 32-bit pattern (use f32(x) for a float)")
            uses = {st.a, st.b, st.c}
            if "s0" in uses and self.s0 == "none" or "s1" in uses and self.s1 == "none":
                fail(f"stages[{k}]", "reads a scalar input that the configuration does not consume")
        for name in ("tail", "so_func"):
            if getattr(self, name) not in _TAILS:
                fail(name, f"unknown tail function {getattr(self, name)!r}; functions: {', '.join(_TAILS)}")
        if self.out_src not in REGISTERS:
            fail("out_src", f"must be a register r0-r3, not {self.out_src!r}")
        for name, built in (("tail", tail_ops), ("so_func", post_ops or ("recip", "rsqrt"))):
            value = getattr(self, name)
            if built is not None and value != "none" and value not in built:
                fail(name, f"this PCU was built without {value!r}; it has {', '.join(built)}")
        if self.reduce not in _REDUCES:
            fail("reduce", f"must be none, sum or max, not {self.reduce!r}")
        if self.so not in _SOS:
            fail("so", f"must be none, every or group, not {self.so!r}")
        if self.so != "none" and self.reduce == "none":
            fail("so", "a scalar output needs a reduction (reduce = sum or max)")
        if not self.vo and self.so == "none":
            fail("vo", "the configuration produces no output")
        if self.systolic_operand and not self.systolic:
            fail("systolic_operand", "only meaningful in systolic mode")
        if self.systolic:
            if self.systolic_operand and sorted(self.inputs) != [0, 1, 2]:
                fail("inputs", "a systolic operand reads vi0 (A column), vi1 (B row) and vi2 (one vector per "
                               f"drained row): inputs must be (0, 1, 2), not {self.inputs!r}")
            if not self.systolic_operand and sorted(self.inputs) != [0, 1]:
                fail("inputs", "systolic mode reads vi0 (A column) and vi1 (B row): inputs must be (0, 1) "
                               f"(or (0, 1, 2) with systolic_operand), not {self.inputs!r}")
            if self.group_src == 2:
                fail("group_src", "in systolic mode a group (a tile) ends with vi0's or vi1's last, not vi2's")
            if not 1 <= self.systolic_rows <= params.stages:
                fail("systolic_rows", f"must be in 1..{params.stages}, not {self.systolic_rows}")
            if self.s0 != "none" or self.s1 != "none":
                fail("systolic", "systolic mode uses no scalar inputs (its drained rows may still be reduced "
                                 "to so0)")
        elif self.systolic_rows:
            fail("systolic_rows", "only meaningful in systolic mode")

    def record(self, params):
        """The configuration as a dict for ``pcu_config_layout(params).const``."""
        self.validate(params)
        stages = list(self.stages) + [PASS] * (params.stages - len(self.stages))
        return {
            "systolic": int(self.systolic),
            "inputs": sum(1 << k for k in self.inputs),
            "group_src": self.group_src,
            "s0": _SCALAR_IN[self.s0], "s1": _SCALAR_IN[self.s1],
            "stages": [{"op": _OPS[st.op], "a": _SRC[st.a], "b": _SRC[st.b], "c": _SRC[st.c],
                        "dst": REGISTERS.index(st.dst), "const": st.const} for st in stages],
            "out_src": REGISTERS.index(self.out_src), "tail_op": _TAILS[self.tail],
            "reduce": _REDUCES[self.reduce], "vo": int(self.vo),
            "so": _SOS[self.so], "so_scale": f32(self.so_scale), "so_bias": f32(self.so_bias),
            "so_func": _TAILS[self.so_func],
            "systolic_rows": self.systolic_rows,
            "systolic_operand": int(self.systolic_operand),
        }

    def pack(self, params):
        """The integer the PCU's ``cfg`` port holds for this configuration."""
        return pcu_config_layout(params).const(self.record(params)).as_value().value


_OPS = {"pass": Op.PASS, "add": Op.ADD, "sub": Op.SUB, "mul": Op.MUL, "fma": Op.FMA, "max": Op.MAX, "min": Op.MIN}
_TAILS = {"none": TailOp.NONE, "exp": TailOp.EXP, "recip": TailOp.RECIP, "rsqrt": TailOp.RSQRT,
          "sigmoid": TailOp.SIGMOID, "silu": TailOp.SILU, "bf16": TailOp.BF16}
_REDUCES = {"none": Reduce.NONE, "sum": Reduce.SUM, "max": Reduce.MAX}
_SOS = {"none": ScalarOut.NONE, "every": ScalarOut.EVERY, "group": ScalarOut.GROUP}
_SCALAR_IN = {"none": ScalarIn.NONE, "per_firing": ScalarIn.PER_FIRING, "per_group": ScalarIn.PER_GROUP}
