"""Chip configurations the compiler targets and the runtime drives: one description per chip.

A :class:`Target` holds what :class:`hw.chip.Chip` is built from (array and
memory parameters, AGCU positions, PCU functions) and the nominal clock that
turns cycles into seconds. The compiler maps onto it, the fast model runs
it, and the co-simulation builds it, so the three agree on every size.

Besides the named :data:`TARGETS`, a target can be a TOML or JSON file
(:func:`load_target`): a named ``base`` whose values fill every field the
file leaves out, then tables ``[array]``, ``[memory]``, ``[hbm]`` and
``[ddr]`` with the fields of :class:`hw.tile.params.ArrayParams`,
:class:`hw.mem.params.MemParams` and :class:`hw.mem.params.TierParams`, and
top-level ``name``, ``clock_hz`` and ``host_launch_cycles``::

    base = "4x8"
    name = "4x8-wide"            # default: the file's name without its suffix
    clock_hz = 1.6e9
    [array]
    rows = 4; cols = 8; lanes = 8; stages = 4
    pmu_kib = 64                 # or pmu_bank_words = 2048 (KiB x 256 / lanes)
    [memory]
    word_bytes = 32; host_bytes_per_cycle = "2/15"
    [hbm]
    capacity_mib = 256           # or capacity = 268435456 (bytes); a power of two
    channels = 4; channel_bytes_per_cycle = 8; latency = 150
    [ddr]
    capacity_mib = 4096; latency = 225

Bandwidths are bytes per cycle: an integer, a decimal, or a fraction as a
string (``"2/15"``). Every error is one :class:`sw.errors.TargetError` line
naming the file and the field.
"""

import json
import math
import re
import tomllib
from dataclasses import dataclass, fields, replace
from fractions import Fraction
from pathlib import Path
from typing import Annotated

import pydantic
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from hw.chip import all_io_positions
from hw.mem.params import MemParams, TierParams
from hw.tile.params import ArrayParams
from hw.tile.pcu import TailOp
from sw.errors import TargetError

MiB = 1 << 20
MAX_TARGET_BYTES = 1 << 20          # a target file is a few hundred bytes

DECODE_TAIL = (TailOp.EXP, TailOp.SILU)
DECODE_POST = (TailOp.RECIP, TailOp.RSQRT)


@dataclass(frozen=True)
class Target:
    """One chip: ``array``, ``memory``, ``agcus`` (I/O positions), PCU ``tail_ops`` / ``post_ops``.

    ``clock_hz`` is the nominal clock for simulated tokens per second.
    ``host_launch_cycles`` is what one kernel launch issued by the host costs
    beyond its Program Load and execution: the host's round trip to write the
    launch registers and see the done interrupt (the spec's 2,000-10,000
    cycle range for software-orchestrated launches; we take its low end).
    """

    name: str
    array: ArrayParams
    memory: MemParams
    tail_ops: tuple[TailOp, ...] = DECODE_TAIL
    post_ops: tuple[TailOp, ...] = DECODE_POST
    clock_hz: float = 1.0e9
    host_launch_cycles: int = 2000

    @property
    def agcus(self):
        return all_io_positions(self.array)

    def chip(self):
        """The :class:`hw.chip.Chip` of this target (imports the RTL only when asked)."""
        from hw.chip import Chip

        return Chip(self.array, self.memory, agcus=self.agcus, pcu_tail_ops=self.tail_ops,
                    pcu_post_ops=self.post_ops)

    def details(self):
        """Every field of the target, one line: what ``openrdu compile`` prints under :meth:`describe`."""
        a, m = self.array, self.memory
        array = ", ".join(f"{f.name} {getattr(a, f.name)}" for f in fields(a))
        tiers = "; ".join(f"{t.name}: capacity {t.capacity / MiB:.10g} MiB, {t.channels} channel"
                          f"{'s' if t.channels > 1 else ''} x {t.channel_bytes_per_cycle} B/cycle, latency {t.latency}, "
                          f"queue {t.queue_depth}" for t in m.tiers)
        return (f"array: {array} (PMU {a.pmu_words * 4 / 1024:g} KiB); {tiers}; memory: word {m.word_bytes} B, "
                f"host link {m.host_bytes_per_cycle} B/cycle, {m.agcus} AGCUs ({m.agcu_outstanding} reads in "
                f"flight, copy {m.copy_outstanding}); clock {self.clock_hz / 1e9:g} GHz, host launch "
                f"{self.host_launch_cycles} cycles; PCU tail {'/'.join(o.name for o in self.tail_ops)}, post "
                f"{'/'.join(o.name for o in self.post_ops)}")

    def describe(self):
        a, m = self.array, self.memory
        return (f"{self.name}: {a.rows}x{a.cols} tiles ({a.rows * a.cols // 2} PCUs of {a.lanes} lanes x "
                f"{a.stages} stages, {a.rows * a.cols // 2} PMUs of {a.pmu_words * 4 // 1024} KiB), "
                f"HBM {m.hbm.capacity // MiB} MiB at {float(m.hbm.bytes_per_cycle):g} B/cycle, "
                f"DDR {m.ddr.capacity // MiB} MiB at {float(m.ddr.bytes_per_cycle):g} B/cycle")


# The co-simulated chip of `make decode` and the tests: small enough to build in minutes, PMUs large enough
# to hold a 256-position attention block of the default model.
CHIP = Target(
    "chip",
    ArrayParams(rows=2, cols=4, lanes=4, stages=2, pmu_bank_words=2048),
    MemParams(hbm=TierParams("hbm", capacity=16 * MiB, channels=2, channel_bytes_per_cycle=8, latency=24),
              ddr=TierParams("ddr", capacity=64 * MiB, channels=1, channel_bytes_per_cycle=2, latency=36)),
)

# The default 4x8 array (16 PCUs of 8 lanes x 4 stages) with 32 KiB PMUs and config-M-like memory: for the
# fast model and benchmarks (its Verilator build takes over ten minutes).
LARGE = Target(
    "4x8",
    ArrayParams(rows=4, cols=8, lanes=8, stages=4, pmu_bank_words=1024),
    MemParams(hbm=TierParams("hbm", capacity=32 * MiB, channels=2, channel_bytes_per_cycle=8, latency=150,
                             queue_depth=16),
              ddr=TierParams("ddr", capacity=1024 * MiB, channels=1, channel_bytes_per_cycle=2, latency=225,
                             queue_depth=16),
              agcus=4, agcu_outstanding=256, copy_outstanding=256),
)

# CHIP's PCUs and memory on a 4x8 array: 16 PCUs hold a decoder layer of the default model as one kernel, so
# its looped program loops on the RTL, and its build stays minutes (the tiles are CHIP's small ones).
CHIP_4X8 = replace(CHIP, name="chip-4x8", array=replace(CHIP.array, rows=4, cols=8))

TARGETS = {t.name: t for t in (CHIP, LARGE, CHIP_4X8)}


def _fraction(value):
    """A bandwidth as given in a file: an integer, a finite decimal, or a string ``"n/d"`` or ``"1.5"``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("expected a number of bytes per cycle (an integer, a decimal or a string \"n/d\")")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("expected a finite number of bytes per cycle")
    try:
        result = Fraction(str(value).strip()) if isinstance(value, (float, str)) else Fraction(value)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{value!r} is not a number of bytes per cycle (an integer, a decimal or \"n/d\")") from None
    if result <= 0 or result > 1 << 20:
        raise ValueError(f"expected a positive number of bytes per cycle up to {1 << 20}, not {value!r}")
    return result


# pydantic.BeforeValidator is a dataclass: not imported by name, so program files do not list it (see _storable).
_Bandwidth = Annotated[Fraction, pydantic.BeforeValidator(_fraction)]
_Int = Annotated[StrictInt, Field(ge=0, le=1 << 40)]


_NAME = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,39}$"


class _Table(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", arbitrary_types_allowed=True)


class _ArrayFile(_Table):
    rows: _Int | None = None
    cols: _Int | None = None
    lanes: _Int | None = None
    stages: _Int | None = None
    pmu_bank_words: _Int | None = None
    pmu_kib: _Int | None = None
    switch_fifo_depth: _Int | None = None
    unit_fifo_depth: _Int | None = None
    vector_channels: _Int | None = None
    scalar_channels: _Int | None = None


class _MemoryFile(_Table):
    word_bytes: _Int | None = None
    host_bytes_per_cycle: _Bandwidth | None = None
    agcus: _Int | None = None
    agcu_outstanding: _Int | None = None
    copy_outstanding: _Int | None = None


class _TierFile(_Table):
    capacity: _Int | None = None
    capacity_mib: _Int | None = None
    channels: _Int | None = None
    channel_bytes_per_cycle: _Bandwidth | None = None
    latency: _Int | None = None
    queue_depth: _Int | None = None


class _TargetFile(_Table):
    base: StrictStr = "chip"
    name: Annotated[StrictStr, Field(pattern=_NAME)] | None = None
    clock_hz: Annotated[float, Field(strict=True, gt=0, le=1e12, allow_inf_nan=False)] | None = None
    host_launch_cycles: _Int | None = None
    array: _ArrayFile = _ArrayFile()
    memory: _MemoryFile = _MemoryFile()
    hbm: _TierFile = _TierFile()
    ddr: _TierFile = _TierFile()


_OWNERS = ((r"ArrayParams\.", "array."), (r"TierParams\('(hbm|ddr)'\)\.", r"\1."), (r"MemParams\.", "memory."))


def _given(table):
    return {k: v for k, v in table.model_dump().items() if v is not None}


def _one_of(given, where, section, exact, alias):
    if exact in given and alias in given:
        raise TargetError(f"{where}: {section}.{exact} and {section}.{alias} both given; give one")
    return given.pop(alias, None)


def parse_target(data, where="target file", name=None):
    """A :class:`Target` from a target file's table (a dict from TOML or JSON); TargetError naming the field.

    ``name`` is the target's name when the table gives none (default: the base's).
    """
    if not isinstance(data, dict):
        raise TargetError(f"{where}: a target file is a table of fields, not {type(data).__name__}")
    try:
        spec = _TargetFile.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "target"
        if first["type"] == "extra_forbidden":
            raise TargetError(f"{where}: {field}: unknown field") from None
        shown = repr(first.get("input"))
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise TargetError(f"{where}: {field} = {shown}: {first['msg'].removeprefix('Value error, ')}") from None
    if spec.base not in TARGETS:
        raise TargetError(f"{where}: base = {spec.base!r}: not a named target ({', '.join(sorted(TARGETS))})")
    base = TARGETS[spec.base]
    array = _given(spec.array)
    kib = _one_of(array, where, "array", "pmu_bank_words", "pmu_kib")
    if kib is not None:
        lanes = array.get("lanes", base.array.lanes)
        if kib * 256 % lanes or kib * 256 < lanes:
            raise TargetError(f"{where}: array.pmu_kib = {kib}: not a whole number of {lanes}-lane rows of 4 bytes")
        array["pmu_bank_words"] = kib * 256 // lanes
    given = {tier: _given(getattr(spec, tier)) for tier in ("hbm", "ddr")}
    mib = {tier: _one_of(given[tier], where, tier, "capacity", "capacity_mib") for tier in given}
    try:
        tiers = {tier: replace(getattr(base.memory, tier), **given[tier],
                               **({} if mib[tier] is None else {"capacity": mib[tier] * MiB})) for tier in given}
        memory = replace(base.memory, **_given(spec.memory), **tiers)
        launch = {} if spec.host_launch_cycles is None else {"host_launch_cycles": spec.host_launch_cycles}
        return replace(base, name=spec.name or name or base.name, array=replace(base.array, **array), memory=memory,
                       clock_hz=spec.clock_hz or base.clock_hz, **launch)
    except ValueError as error:
        text = str(error)
        for pattern, owner in _OWNERS:
            text = re.sub(pattern, owner, text)
        raise TargetError(f"{where}: {text}") from None


def load_target(spec):
    """The target ``spec`` names: a key of :data:`TARGETS`, or the path of a ``.toml`` or ``.json`` target file.

    Raises
    ------
    TargetError
        An unknown name, an unreadable or malformed file, or a bad field (one line naming the file and field).
    """
    if isinstance(spec, Target):
        return spec
    spec = str(spec)
    if spec in TARGETS:
        return TARGETS[spec]
    path = Path(spec)
    if path.suffix not in (".toml", ".json"):
        raise TargetError(f"unknown target {spec!r}: give one of {', '.join(sorted(TARGETS))} or a .toml or .json "
                          f"target file")
    from sw.compiler.checkpoint import CheckpointError, _no_constant, _no_duplicates, read_bytes

    try:
        data = read_bytes(path, MAX_TARGET_BYTES, "target file")
    except CheckpointError as error:
        raise TargetError(str(error)) from None
    try:
        text = data.decode("utf-8")
        table = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant) \
            if path.suffix == ".json" else tomllib.loads(text)
    except UnicodeDecodeError as error:
        raise TargetError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except (ValueError, RecursionError) as error:   # JSONDecodeError and TOMLDecodeError are ValueErrors
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise TargetError(f"{path}: not valid {kind} ({' '.join(str(error).split())[:200]})") from None
    stem_ok = re.fullmatch(_NAME, path.stem) is not None
    return parse_target(table, str(path), name=path.stem if stem_ok else None)
