"""Bit-exact BF16/FP32 arithmetic units; the numerics policy is in docs/numerics.md."""

from .mul import Bf16Mul, MulOperands, bf16_mul_datapath, Fp32Mul, Fp32MulOperands, fp32_mul_datapath
from .add import Fp32Add, AddOperands, fp32_add_datapath
from .fma import Fma, FmaOperands
from .convert import (Fp32ToBf16, Bf16ToFp32, IntToFp32, Fp32ToInt, fp32_to_bf16_datapath,
                      bf16_to_fp32_datapath, int_to_fp32_datapath, fp32_to_int_datapath)
from .cmp import Fp32Cmp, CmpOperands, CmpResult, fp32_cmp_datapath
from .tail import (Exp, Recip, Rsqrt, Sigmoid, Silu, Tail, TailOp, TailOperands, tail_datapath, tail_latency,
                   exp_datapath, recip_datapath, rsqrt_datapath,
                   sigmoid_datapath, silu_datapath)
from .pipeline import Pipeline

__all__ = [
    "Bf16Mul", "MulOperands", "bf16_mul_datapath",
    "Fp32Mul", "Fp32MulOperands", "fp32_mul_datapath",
    "Fp32Add", "AddOperands", "fp32_add_datapath",
    "Fma", "FmaOperands",
    "Fp32ToBf16", "Bf16ToFp32", "IntToFp32", "Fp32ToInt",
    "fp32_to_bf16_datapath", "bf16_to_fp32_datapath", "int_to_fp32_datapath", "fp32_to_int_datapath",
    "Fp32Cmp", "CmpOperands", "CmpResult", "fp32_cmp_datapath",
    "Exp", "Recip", "Rsqrt", "Sigmoid", "Silu", "Tail", "TailOp", "TailOperands", "tail_datapath", "tail_latency",
    "exp_datapath", "recip_datapath", "rsqrt_datapath", "sigmoid_datapath", "silu_datapath",
    "Pipeline",
]
