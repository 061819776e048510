"""Decode on the RTL: the runtime's decode loop run on the co-simulated chip, from outside cocotb.

:func:`run_rtl` runs ``cosim/tb/run_decode.py`` on the ``chip`` unit's
Verilator build (built, or reused from the cache) and returns what
:func:`sw.runtime.decode.generate` returned there. The unit is built from
``sw.target.CHIP``, so only a model compiled for that target can run on it.
"""

import json
import os
import re
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

from cosim import harness
from cosim.tb.units_chip import TARGET, UNITS
from sw.compiler import program

# An exception's last traceback line in a cocotb log.
_ERROR_LINE = re.compile(r"^\s*((?:\w+\.)*\w*(?:Error|Exception): .*)$")


from sw.errors import CompileError, SimulationError  # noqa: F401  (re-exported)


def check_target(target):
    """Refuse a compiled model whose target is not the co-simulated chip's (:class:`sw.errors.CompileError`)."""
    if target == TARGET:
        return
    name = getattr(target, "name", None)
    which = f"another definition of target {name!r}; recompile it" if name == TARGET.name \
        else f"target {name or target!r}"
    raise CompileError(f"the RTL backend co-simulates the {TARGET.name} target; compile with --target "
                       f"{TARGET.name} (this model was compiled for {which})")


def run_rtl(compiled_path, request, *, quiet=True, progress=None):
    """Generate tokens with the compiled model at ``compiled_path`` on the co-simulated chip.

    Parameters
    ----------
    compiled_path : path or list of paths
        A :class:`sw.compiler.program.CompiledModel` saved by
        :func:`sw.compiler.program.save`, compiled for ``sw.target.CHIP``;
        with a list, each model runs in turn in the one simulation.
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
    AssertionError
        The model was compiled for another target.
    SimulationError
        The simulation failed; the message names its log.
    """
    several = isinstance(compiled_path, (list, tuple))
    paths = [Path(p).resolve() for p in (compiled_path if several else [compiled_path])]
    # The testbench checks again; checking here fails before a Verilator build.
    for path in paths:
        check_target(program.load(path).target)
    with tempfile.TemporaryDirectory(prefix="openrdu-decode-") as tmp:
        request_path, result_path = Path(tmp) / "request.json", Path(tmp) / "result.json"
        progress_path = Path(tmp) / "progress"
        request_path.write_text(json.dumps(request))
        env = {"OPENRDU_DECODE_PROGRAM": os.pathsep.join(str(p) for p in paths),
               "OPENRDU_DECODE_REQUEST": str(request_path), "OPENRDU_DECODE_RESULT": str(result_path)}
        run_chip_testbench("cosim.tb.run_decode", env, "decode", result_path, progress_path,
                           progress=progress, quiet=quiet)
        out = json.loads(result_path.read_text())
        return out if several else out[0]


def run_chip_testbench(testbench, env, what, result_path, progress_path, *, progress=None, quiet=True):
    """Run ``testbench`` on the ``chip`` unit's build with ``env``; it writes its result to ``result_path``.

    ``progress(index, done, total)`` follows what the testbench writes to ``progress_path``. A failed or
    unfinished simulation raises :class:`SimulationError` naming ``what`` and the log.
    """
    unit = replace(UNITS["chip"], testbench=testbench, env={**env, "OPENRDU_DECODE_PROGRESS": str(progress_path)})
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
