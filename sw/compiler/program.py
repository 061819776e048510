"""The compiled model: everything the runtime needs to run a model on a target, and its file format."""

import enum
import errno
import os
import stat
import sys
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from hw.mem.params import TIER_NAMES
from sw.compiler import artifact
from sw.compiler.checkpoint import LlamaShape
from sw.compiler.launch import Launch
from sw.compiler.memory_map import MemoryMap
from sw.compiler.prefill import PrefillKernels
from sw.errors import CompileError, ProgramFormatError
from sw.target import Target


FORMAT = "openrdu-program"
VERSION = 1


@dataclass
class CompiledModel:
    """Everything the runtime needs to run a model on a target.

    Attributes
    ----------
    shape : LlamaShape
    target : sw.target.Target
    mode : str
        ``"fused"``, ``"unfused"`` or ``"looped"`` (fused, the decoder layers one looped kernel:
        :mod:`sw.compiler.loop`).
    context : int
        Positions the KV cache holds; prompts plus generated tokens must fit.
    buckets : dict
        Attention length ``tp`` -> the launches of one decode step that attends
        over ``tp`` positions (the smallest bucket covering ``pos + 1`` runs).
    memory_map : MemoryMap
    image : dict
        Region name -> uint32 words to load before running (weights, tables, programs).
    zeroed : list
        Regions to clear before a new sequence (the KV caches).
    logits : str
        Region holding the logits after a step.
    compile_seconds : float
    checkpoint : str
        The checkpoint folder compiled.
    launch_lists : dict
        Attention length ``tp`` -> the region holding that bucket's launch list
        (:mod:`sw.runtime.launch_list`), which the chip's sequencer walks for a
        step under chip orchestration.
    weights_dtype : str
        The weights policy compiled with: ``auto``, ``bf16`` or ``fp32`` (``--weights-dtype``).
    weights : str
        What the policy made of the checkpoint's weights, for summaries and reports
        (``fp32 rounded to bf16 (--weights-dtype bf16)``).
    loop_note : str
        Looped mode: why the layers were fused instead of looped (empty when they were looped).
    token : str
        Region where the step's ``argmax`` op leaves greedy decoding's token as ``-index`` in fp32 (one
        vector), or "" when the program has no such op.
    prefill : list
        :class:`sw.compiler.prefill.PrefillKernels`, one per chunk size and attention bucket: the prompt's
        kernels (empty when not compiled or not possible, ``prefill_note`` says which).
    prefill_embed : Launch or None
        The copy of one prompt token's embedding row into its chunk row.
    prefill_note : str
        Why there is no prefill although it was asked for, or "".
    """

    shape: LlamaShape
    target: Target
    mode: str
    context: int
    buckets: dict[int, list[Launch]]
    memory_map: MemoryMap
    image: dict[str, npt.NDArray[np.uint32]]
    zeroed: list[str]
    logits: str
    compile_seconds: float = 0.0
    checkpoint: str = ""
    launch_lists: dict[int, str] = field(default_factory=dict)
    weights_dtype: str = "auto"
    weights: str = ""
    loop_note: str = ""
    token: str = ""
    prefill: list[PrefillKernels] = field(default_factory=list)
    prefill_embed: Launch | None = None
    prefill_note: str = ""

    def prefill_chunks(self, positions):
        """The chunks prefill runs for ``positions`` prompt positions: ``(start, PrefillKernels)``; positions past
        the last chunk (none fits before the context ends) are left to decode steps."""
        from sw.compiler.prefill import chunks
        if not self.prefill:
            return []
        sizes = sorted({c.block for c in self.prefill})
        kernels = {(c.block, c.tp): c for c in self.prefill}
        return [(start, kernels[block, tp]) for start, block, tp in chunks(positions, sizes, self.context,
                                                                           sorted(self.buckets))]

    def bucket(self, pos):
        """The launches of the step at ``pos`` (0-based)."""
        for tp in sorted(self.buckets):
            if pos < tp:
                return tp, self.buckets[tp]
        raise CompileError(f"position {pos} is past the compiled context of {self.context} positions")

    def launches(self, tp=None):
        return self.buckets[tp or max(self.buckets)]

    def summary(self):
        """Kernels, units, routes, bytes per tier and the memory map."""
        from sw.compiler.estimate import estimate_step, padding_text

        t, s = self.target, self.shape
        tp = max(self.buckets)
        launches = self.buckets[tp]
        pcus, pmus = t.array.rows * t.array.cols // 2, t.array.rows * t.array.cols // 2
        lines = [f"{self.checkpoint or 'model'}: {s.num_layers} layers, d={s.hidden_size}, {s.num_heads} heads "
                 f"({s.num_kv_heads} KV) x {s.head_dim}, FFN {s.intermediate_size}, vocab {s.vocab_size}, "
                 f"RoPE {s.rope}",
                 f"target {t.describe()}", f"  {t.details()}",
                 f"mode {self.mode}: {len(launches)} kernels per decode step ({len(self.buckets)} context buckets "
                 f"up to {self.context} positions), compiled in {self.compile_seconds:.2f} s", ""]
        lines[-1:-1] = [text for text in (s.variant(), padding_text(self)) if text]
        lines[-1:-1] = [f"weights: {self.weights}"] if self.weights else []
        lines[-1:-1] = [f"looping: {self.loop_note}"] if self.loop_note else []
        if self.prefill:
            blocks = sorted({c.block for c in self.prefill})
            largest = max((c for c in self.prefill), key=lambda c: (c.block, c.tp))
            lines[-1:-1] = [f"prefill: chunks of {', '.join(map(str, blocks))} positions, {len(self.prefill)} chunk "
                            f"programs (block x attention bucket); {len(largest.launches)} kernels for a chunk of "
                            f"{largest.block} attending over {largest.tp}"]
        elif self.prefill_note:
            lines[-1:-1] = [f"prefill: {self.prefill_note}"]
        lines.append(f"{'kernel':<12} {'PCUs':>5} {'PMUs':>5} {'AGCU r/w':>8} {'routes':>6} {'hops':>5}  ops")
        for launch in launches:
            c, m = launch.units()
            reads = sum(1 for st in launch.streams if st.direction == "read")
            writes = len(launch.streams) - reads
            hops = sum(v["channel_hops"] for v in launch.program.routing.stats().values())
            lines.append(f"{launch.name:<12} {c:>2}/{pcus:<2} {m:>2}/{pmus:<2} {reads:>4}/{writes:<3} "
                         f"{len(launch.program.connections):>6} {hops:>5}  {', '.join(o.name for o in launch.ops)}")
        by_what = self.memory_map.bytes_by(lambda r: (TIER_NAMES[r.tier], r.what))
        lines.append("")
        lines.append("memory: " + ", ".join(f"{tier.upper()} {what} {n / 1024:.1f} KiB"
                                            for (tier, what), n in sorted(by_what.items())))
        est = estimate_step(self, tp)
        lines.append(f"per token at {tp} positions: {est['bytes_read']} bytes read, {est['bytes_written']} written; "
                     f"estimated {est['cycles']:.0f} cycles ({est['kernel_cycles']:.0f} in kernels, "
                     f"{est['launch_cycles']:.0f} launching {len(launches)} kernels)")
        return "\n".join(lines)


def _storable():
    """The classes a program file may hold: MemoryMap, and the dataclasses and enums of the modules a
    compiled model is made of (found by name, so a new field type of theirs needs no list here)."""
    from sw import target
    from sw.compiler import checkpoint, launch, memory_map, ops, prefill
    from sw.tile import kernel, pcu, pmu, route

    found = {MemoryMap}
    for module in (sys.modules[__name__], checkpoint, launch, memory_map, ops, prefill, target, kernel, pcu, pmu,
                   route):
        found |= {v for v in vars(module).values()
                  if isinstance(v, type) and (is_dataclass(v) or issubclass(v, enum.Enum))}
    return tuple(found)


def dumps(obj):
    """The program-file bytes of ``obj`` (a :class:`CompiledModel`, or a part of one such as a Program)."""
    return artifact.dumps(obj, format=FORMAT, version=VERSION, classes=_storable())


def loads(data, where="<bytes>"):
    """The object in program-file bytes ``data``; ProgramFormatError naming ``where`` and the problem."""
    return artifact.loads(data, format=FORMAT, version=VERSION, classes=_storable(), where=where)


def save(compiled, path):
    """Write ``compiled`` to ``path`` as a program file (see :mod:`sw.compiler.artifact`)."""
    try:
        Path(path).write_bytes(dumps(compiled))
    except OSError as e:
        raise CompileError(f"cannot write {path}: {e.strerror}") from None


def load(path):
    """Read a compiled model written by :func:`save`; ProgramFormatError naming the file and the problem."""
    path = Path(path)
    try:
        # Non-blocking, then checked: a FIFO or device where the file belongs is refused, not waited on.
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY), "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise ProgramFormatError(f"{path}: cannot read the compiled program "
                                         f"({'a directory' if stat.S_ISDIR(mode) else 'not a regular file'})")
            data = f.read()
    except OSError as e:
        what = "a directory" if e.errno == errno.EISDIR else e.strerror.lower()
        raise ProgramFormatError(f"{path}: cannot read the compiled program ({what})") from None
    compiled = loads(data, str(path))
    if not isinstance(compiled, CompiledModel):
        raise ProgramFormatError(f"{path}: holds a {type(compiled).__name__}, not a compiled model")
    return compiled
