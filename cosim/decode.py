"""Decode on the RTL: the runtime's decode loop run on the co-simulated chip, from outside cocotb.

:func:`run_rtl` runs ``cosim/tb/run_decode.py`` on the Verilator build of the
compiled model's target (built, or reused from the cache) and returns what
:func:`sw.runtime.decode.generate` returned there. Two targets are
co-simulated (``cosim.tb.units_chip.TARGET_UNITS``): ``sw.target.CHIP`` on
the ``chip`` unit and ``sw.target.CHIP_4X8`` on the ``chip-4x8`` unit; a model
compiled for any other target is refused before a build.
"""

import json
import os
import re
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

from cosim import harness
from cosim.tb.units_chip import SIMULATED, TARGET, TARGET_UNITS
from sw.compiler import program

# An exception's last traceback line in a cocotb log.
_ERROR_LINE = re.compile(r"^\s*((?:\w+\.)*\w*(?:Error|Exception): .*)$")


from sw.errors import CompileError, SimulationError  # noqa: F401  (re-exported)


def check_target(target, targets=None):
    """Refuse a compiled model whose target is not a co-simulated chip's (:class:`sw.errors.CompileError`).

    ``targets``: the targets allowed, default every co-simulated one (:data:`SIMULATED`); one line names them.
    """
    targets = tuple(SIMULATED.values()) if targets is None else tuple(targets)
    if target in targets:
        return
    name = getattr(target, "name", None)
    which = f"another definition of target {name!r}; recompile it" if name in {t.name for t in targets} \
        else f"target {name or target!r}"
    if len(targets) == 1:
        raise CompileError(f"the RTL backend co-simulates the {targets[0].name} target; compile with --target "
                           f"{targets[0].name} (this model was compiled for {which})")
    names = " or ".join(t.name for t in targets)
    raise CompileError(f"the RTL backend co-simulates the targets {', '.join(t.name for t in targets)}; compile "
                       f"with --target {names} (this model was compiled for {which})")


def run_rtl(compiled_path, request, *, quiet=True, progress=None):
    """Generate tokens with the compiled model at ``compiled_path`` on the co-simulated chip.

    Parameters
    ----------
    compiled_path : path or list of paths
        A :class:`sw.compiler.program.CompiledModel` saved by
        :func:`sw.compiler.program.save`, compiled for a co-simulated target
        (``sw.target.CHIP`` or ``sw.target.CHIP_4X8``); with a list, each
        model runs in turn in the one simulation, so all share one target.
    request : dict
        ``prompt_ids``, ``max_new_tokens`` and optionally ``temperature``,
        ``top_k``, ``seed``: the arguments of :func:`sw.runtime.decode.generate`.
    quiet : bool
        Send the simulator's output (``step i/n`` progress lines included)
        to ``sim.log`` in the run folder instead of the terminal.
    progress : callable, optional
        ``progress(index, done, total)`` while model ``index`` runs (polled twice a second).

    Returns
    -------
    dict, or list of dict for a list of paths
        ``generate``'s result, as the testbench wrote it in JSON.

    Raises
    ------
    CompileError
        A model was compiled for a target that is not co-simulated, or the
        models of a list for different targets.
    SimulationError
        The simulation failed; the message names its log.
    """
    several = isinstance(compiled_path, (list, tuple))
    paths = [Path(p).resolve() for p in (compiled_path if several else [compiled_path])]
    # The testbench checks again; checking here fails before a Verilator build.
    targets = [program.load(path).target for path in paths]
    for target in targets:
        check_target(target)
    if any(target != targets[0] for target in targets):
        raise CompileError(f"the models run in one simulation of one chip; they were compiled for the targets "
                           f"{', '.join(dict.fromkeys(t.name for t in targets))}: compile them for one")
    with tempfile.TemporaryDirectory(prefix="openrdu-decode-") as tmp:
        request_path, result_path = Path(tmp) / "request.json", Path(tmp) / "result.json"
        progress_path = Path(tmp) / "progress"
        request_path.write_text(json.dumps(request))
        env = {"OPENRDU_DECODE_PROGRAM": os.pathsep.join(str(p) for p in paths),
               "OPENRDU_DECODE_REQUEST": str(request_path), "OPENRDU_DECODE_RESULT": str(result_path)}
        run_chip_testbench("cosim.tb.run_decode", env, "decode", result_path, progress_path,
                           progress=progress, quiet=quiet, target=targets[0])
        out = json.loads(result_path.read_text())
        return out if several else out[0]


def run_chip_testbench(testbench, env, what, result_path, progress_path, *, progress=None, quiet=True,
                       target=TARGET):
    """Run ``testbench`` on the build of ``target`` (default the ``chip`` unit's) with ``env``.

    The testbench writes its result to ``result_path``. ``progress(index, done, total)`` follows what it
    writes to ``progress_path``. A failed or unfinished simulation raises :class:`SimulationError` naming
    ``what`` and the log.
    """
    check_target(target)
    # OPENRDU_CHIP_TARGET tells the testbench which chip it runs on (cosim/tb/run_decode.py checks the models').
    unit = replace(TARGET_UNITS[target.name], testbench=testbench,
                   env={**env, "OPENRDU_DECODE_PROGRESS": str(progress_path), "OPENRDU_CHIP_TARGET": target.name})
    done = threading.Event()
    watcher = None
    if progress:
        watcher = threading.Thread(target=_watch, args=(progress_path, progress, done), daemon=True)
        watcher.start()
    try:
        results = harness.run(unit, quiet=quiet, log=(lambda line: None) if quiet else print)
    except RuntimeError as error:
        raise SimulationError(f"{what} on the co-simulated chip did not finish: {error}") from None
    finally:
        done.set()
        if watcher:
            watcher.join()
    if not results.ok or not result_path.exists():
        log_path = results.xml.parent / "sim.log"
        cause = _last_error(log_path) if quiet else None
        raise SimulationError(f"{what} on the co-simulated chip failed{f': {cause}' if cause else ''}; see "
                              f"{log_path if quiet else 'the simulator output above'}")


def _watch(path, progress, done):
    """Call ``progress`` with what the testbench last wrote to ``path`` until ``done`` is set."""
    seen = None
    while not done.wait(0.5):
        try:
            text = path.read_text()
        except OSError:
            continue
        if text and text != seen:
            seen = text
            try:
                index, step, total = map(int, text.split())
            except ValueError:
                continue
            progress(index, step, total)


def _last_error(log_path):
    """The last exception line of a cocotb log (``SomeError: message``), or None."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    found = [m.group(1) for m in map(_ERROR_LINE.search, lines) if m]
    return found[-1] if found else None
