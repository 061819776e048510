"""Elaborate each distinct unit once for Verilator, and the design's parts in parallel.

Amaranth builds one netlist for the whole design and writes one module per
instance: the 16 PCUs of a 4x8 array are elaborated, checked and written 16
times, and most of that time is Amaranth's Python side (netlist, comb-cycle
check, RTLIL), not Yosys. :func:`convert` instead replaces every instance of
a unit class (:data:`UNIT_CLASSES`) with an ``Instance`` of a module named
after the unit's class and constructor arguments, converts one
representative of each distinct unit on its own, and joins the texts. The
modules' netlists, RTLIL and Yosys runs go to worker processes (``fork``),
one per core.

Only how the design is cut into Verilog modules changes. A unit is connected
through exactly the ports of its signature, the same signals the whole-design
conversion connects, so the logic is the same; a constant that a parent
drives into a port is no longer folded into that one instance's module by
Amaranth (Verilator folds it where it inlines the instance). The Amaranth
design itself is untouched (the Amaranth simulator and
``amaranth.back.verilog`` see the whole design as before); this path serves
the Verilator build only.

A unit is split out only when that is safe to decide from its constructor:
its arguments must have value-like ``repr``s (no Amaranth values, however
deeply held, no object addresses), and none of its attributes may be an
Amaranth value other than a signature port, nor hold one, nor be a memory or
another elaboratable (a parent could read or drive such a signal, which the
instance would not connect). A unit reached through a transform
(``ResetInserter``, ``EnableInserter``, ``DomainRenamer``) is elaborated in
place with everything under it, so that the transform still applies. A design
that defines a clock domain of its own is not split at all
(:class:`NotSplittable`): a unit converted alone gets the default ``sync``
domain. Local domains (a unit's gated clock) are the exception: only the
fragments under them see them. Anything else is elaborated in place, as before.
"""

import contextlib
import dataclasses
import functools
import hashlib
import importlib
import multiprocessing
import re

from amaranth.hdl import ClockSignal, Const, Elaboratable, Instance, ResetSignal, Value, ValueCastable
from amaranth.hdl._ir import Fragment, PortDirection
from amaranth.hdl._xfrm import TransformedElaboratable
from amaranth.lib import wiring
from amaranth.back import verilog

from cosim.cpus import usable_cpus

# Unit classes instantiated many times in an array or chip, and used by their parents only through ports.
UNIT_CLASSES = ("hw.tile.pcu:Pcu", "hw.tile.pmu:Pmu", "hw.tile.switch:Switch", "hw.mem.agcu:Agcu",
                # Instantiated once, but large: converted on their own, they spread the work over the cores.
                "hw.tile.fabric:Fabric", "hw.tile.config:ConfigLoader", "hw.mem.csr:CsrBank",
                "hw.mem.system:MemorySystem", "hw.mem.sequencer:Sequencer")
_DOMAIN_PORTS = {"clk": lambda: ClockSignal("sync"), "rst": lambda: ResetSignal("sync")}
_HEADER = re.compile(r"^module (\S+?) ?\((.*?)\);", re.S | re.M)
# How Amaranth prints values and interfaces that hold them: an argument whose repr shows one holds a signal.
_VALUE_REPR = re.compile(r"\((sig|const|cat|slice|part|memory) |<(Pure|Flipped)Interface")


class NotSplittable(Exception):
    """The design cannot be cut into separately converted units (the reason is the message)."""


def _classes():
    out = []
    for spec in UNIT_CLASSES:
        module, name = spec.split(":")
        out.append(getattr(importlib.import_module(module), name))
    return tuple(out)


def _value_like(obj, depth=0):
    """Whether ``obj``'s repr names its value: no Amaranth values, no objects printed by address."""
    if depth > 8 or isinstance(obj, (Value, ValueCastable, wiring.Component)):
        return False
    if isinstance(obj, (tuple, list, frozenset, set)):
        return all(_value_like(item, depth + 1) for item in obj)
    if isinstance(obj, dict):
        return all(_value_like(k, depth + 1) and _value_like(v, depth + 1) for k, v in obj.items())
    text = repr(obj)
    return " at 0x" not in text and not _VALUE_REPR.search(text)


def _port_values(obj):
    """``(name, flow, value)`` of each signature port, named as ``verilog.convert`` names a top module's ports."""
    ports = []
    for path, member, value in obj.signature.flatten(obj):
        if isinstance(value, ValueCastable):
            value = value.as_value()
        if isinstance(value, Value):
            ports.append(("__".join(map(str, path)), "i" if member.flow == wiring.In else "o", value))
    return ports


def _holds_other_values(obj, ports):
    """Whether an attribute of ``obj`` is an Amaranth value that is not one of its ports."""
    own = {id(value) for _, _, value in ports}

    def walk(item, depth):
        if isinstance(item, ValueCastable):
            item = item.as_value()
        if isinstance(item, Value):
            return id(item) not in own and not item.shape().width == 0 and not isinstance(item, Const)
        if isinstance(item, (wiring.Member, wiring.Signature)):
            return False  # a description of ports, not ports
        if isinstance(getattr(item, "signature", None), wiring.Signature) and not isinstance(item, Elaboratable):
            # An interface: its members are ports of the unit, or signals a parent could reach.
            return any(walk(value, depth + 1) for _, _, value in item.signature.flatten(item))
        if isinstance(item, Elaboratable) or type(item).__name__ == "Memory":
            return True  # a parent could use its ports or read ports, which the instance would not have
        if depth >= 3 or isinstance(item, (str, bytes, int, float, type)):
            return False
        if isinstance(item, (tuple, list, set, frozenset)):
            return any(walk(x, depth + 1) for x in item)
        if isinstance(item, dict):
            return any(walk(x, depth + 1) for x in item.values())
        if dataclasses.is_dataclass(item):
            return any(walk(getattr(item, f.name), depth + 1) for f in dataclasses.fields(item))
        if hasattr(item, "__dict__"):
            return any(walk(x, depth + 1) for x in vars(item).values())
        return False

    for name, item in vars(obj).items():
        if name == "_Component__signature" or name.startswith("_MustUse"):
            continue
        if isinstance(item, (Value, ValueCastable)) and any(item is value for _, _, value in ports):
            continue
        if walk(item, 0):
            return True
    return False


class _Splitter:
    """Records unit constructions and turns unit instances into ``Instance``s while a design elaborates."""

    def __init__(self, root):
        self.classes = _classes()
        self.root = root
        self.units = {}        # module name -> representative unit object
        self.args = {}         # id(obj) -> (obj, key text); holding obj keeps its id from being reused
        self.transformed = 0   # depth of transformed elaboratables being elaborated: nothing under them is split

    @contextlib.contextmanager
    def active(self):
        originals = {cls: cls.__init__ for cls in self.classes}
        get = Fragment.get
        transformed_elaborate = TransformedElaboratable.elaborate

        def elaborate_transformed(wrapper, platform):
            self.transformed += 1
            try:
                return transformed_elaborate(wrapper, platform)
            finally:
                self.transformed -= 1

        def recording(cls, init):
            @functools.wraps(init)
            def __init__(obj, *args, **kwargs):
                init(obj, *args, **kwargs)
                if type(obj) is cls and _value_like((args, kwargs)):
                    self.args[id(obj)] = (obj, f"{cls.__module__}.{cls.__qualname__}{(args, kwargs)!r}")
            return __init__

        def get_or_instance(obj, platform):
            replaced = self._instance(obj) if obj is not self.root and not self.transformed else None
            return replaced if replaced is not None else get(obj, platform)

        for cls, init in originals.items():
            cls.__init__ = recording(cls, init)
        Fragment.get = staticmethod(get_or_instance)
        TransformedElaboratable.elaborate = elaborate_transformed
        try:
            yield self
        finally:
            Fragment.get = staticmethod(get)
            TransformedElaboratable.elaborate = transformed_elaborate
            for cls, init in originals.items():
                cls.__init__ = init

    def _instance(self, obj):
        obj_key = self.args.get(id(obj))
        if obj_key is None or obj_key[0] is not obj:
            return None
        key = obj_key[1]
        ports = _port_values(obj)
        if _holds_other_values(obj, ports):
            return None
        name = f"{type(obj).__name__.lower()}_{hashlib.sha256(key.encode()).hexdigest()[:10]}"
        self.units.setdefault(name, obj)
        obj._MustUse__used = True  # stands in for its instances: never elaborated in place
        return Instance(name, *((flow, port, value) for port, flow, value in ports),
                        *(("i", port, signal()) for port, signal in _DOMAIN_PORTS.items()))


# Work for the forked converters: set before the pool starts, read by index in the children.
_JOBS = []


def _convert_job(index):
    name, obj, ports = _JOBS[index]
    return verilog.convert(obj, name=name, ports=ports, emit_src=False)


def _fit_domain_ports(text, name, obj):
    """Check unit module ``name``'s ports; add the clock and reset inputs its instances connect, if it lacks them."""
    header = _HEADER.search(text)
    if header is None or header.group(1) != name:
        raise RuntimeError(f"the converted unit has no module {name!r} first")
    ports = [p.strip() for p in header.group(2).split(",")]
    extra = {p.lstrip("\\") for p in ports} - {port for port, _, _ in _port_values(obj)} - set(_DOMAIN_PORTS)
    if extra:
        raise RuntimeError(f"unit module {name} ({type(obj).__name__}) has ports beyond its signature and the sync "
                           f"domain ({', '.join(sorted(extra))}); remove its class from cosim.split.UNIT_CLASSES")
    missing = [p for p in _DOMAIN_PORTS if p not in ports]
    if not missing:
        return text
    # An unused input: the instance's connection stays legal and the unit's logic is unchanged.
    start, end = header.span()
    head = f"module {name}({', '.join(ports + missing)});\n" + "".join(f"  input {p};" for p in missing)
    return text[:start] + head + text[end:]


def _own_domains(fragment):
    """Names of the clock domains ``fragment`` or any fragment under it defines and shares with its parent.

    A local domain (``ClockDomain(local=True)``, such as a unit's gated clock derived from ``sync``) is
    seen only by the fragments under its own, so a unit defining one converts alone as it does in place.
    """
    names = {name for name, domain in fragment.domains.items() if not domain.local}
    for sub, *_ in fragment.subfragments:
        names |= _own_domains(sub)
    return names


def _ports_of(obj):
    return {port: (value, PortDirection.Input if flow == "i" else PortDirection.Output)
            for port, flow, value in _port_values(obj)}


def convert(design, name, *, jobs=None):
    """Verilog of ``design`` (top module ``name``) with each distinct unit converted once.

    Parameters
    ----------
    design : amaranth.lib.wiring.Component
        A fresh design, as a :class:`~cosim.harness.SimUnit`'s factory returns it.
    name : str
        The top module's name.
    jobs : int, optional
        Worker processes (default: one per usable CPU, :func:`cosim.cpus.usable_cpus`, at most one per module to
        convert); 1 converts here.

    Returns
    -------
    (str, int)
        The Verilog (the top's module first, then each unit's) and how many distinct units were split out.

    Raises
    ------
    NotSplittable
        When the design defines a clock domain of its own; convert it whole (with a fresh design object:
        this one has been elaborated).
    """
    # Python elaboration (a tenth of the work) runs here, level by level: the top, then each distinct
    # unit, a unit inside a unit becoming an Instance again. The netlists, RTLIL and Yosys runs (the rest)
    # then run in parallel, one job per module.
    splitter = _Splitter(design)
    work, units, queue = [], [], [(name, design)]
    with splitter.active():
        while queue:
            job_name, obj = queue.pop(0)
            splitter.root = obj
            known = set(splitter.units)
            fragment = Fragment.get(obj, None)
            domains = _own_domains(fragment)
            if domains:
                raise NotSplittable(f"{job_name} defines the clock domains {', '.join(sorted(domains))}")
            work.append((job_name, fragment, _ports_of(obj)))
            found = sorted((n, o) for n, o in splitter.units.items() if n not in known)
            units += found
            queue += found
    jobs = min(jobs or usable_cpus(), len(work))
    _JOBS[:] = work
    try:
        if jobs > 1:
            with multiprocessing.get_context("fork").Pool(jobs) as pool:
                texts = pool.map(_convert_job, range(len(work)), chunksize=1)
        else:
            texts = [_convert_job(i) for i in range(len(work))]
    finally:
        _JOBS.clear()
    out = [texts[0]]
    out += [_fit_domain_ports(text, unit_name, obj) for (unit_name, obj), text in zip(units, texts[1:])]
    return "".join(out), len(units)
