"""Decode on the RTL: the runtime's decode loop run on the co-simulated chip, from outside cocotb.

:func:`run_rtl` runs ``cosim/tb/run_decode.py`` on the Verilator build of the
compiled model's target (built, or reused from the cache) and returns what
:func:`sw.runtime.decode.generate` returned there. Two targets are
co-simulated (``cosim.tb.units_chip.TARGET_UNITS``): ``sw.target.CHIP`` on
the ``chip`` unit and ``sw.target.CHIP_4X8`` on the ``chip-4x8`` unit; a model
compiled for any other target is refused before a build. Several models
run in several simulations at once, as many as the process has CPUs
(``OPENRDU_PARALLEL_SIMS`` sets the count; 1 runs them all in one).
"""

import json
import os
import re
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from cosim import harness
from cosim.cpus import usable_cpus
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


# How many simulations run_rtl runs at once; unset, as many as the process has CPUs.
PARALLEL_SIMS = "OPENRDU_PARALLEL_SIMS"


def parallel_sims():
    """How many simulations :func:`run_rtl` runs at once: ``$OPENRDU_PARALLEL_SIMS`` (a positive integer; 1
    runs every model in one simulation), else the number of CPUs this process may run on."""
    text = os.environ.get(PARALLEL_SIMS, "").strip()
    if not text:
        return usable_cpus()
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise SimulationError(f"{PARALLEL_SIMS} must be a positive integer (1: one simulation), not {text!r}")
    return int(text)


def groups(weights, count):
    """The indices of ``weights`` in at most ``count`` groups of about equal total weight, each in order.

    The heaviest goes first into the lightest group (ties: the earliest), so with ``count`` of at least
    ``len(weights)`` each index is alone, and with 1 all are in one group.
    """
    count = max(1, min(count, len(weights)))
    out, load = [[] for _ in range(count)], [0] * count
    for index in sorted(range(len(weights)), key=lambda i: -weights[i]):
        lightest = load.index(min(load))
        out[lightest].append(index)
        load[lightest] += weights[index]
    return [sorted(group) for group in out]


def run_rtl(compiled_path, request, *, quiet=True, progress=None, parallel=None):
    """Generate tokens with the compiled model at ``compiled_path`` on the co-simulated chip.

    Parameters
    ----------
    compiled_path : path or list of paths
        A :class:`sw.compiler.program.CompiledModel` saved by
        :func:`sw.compiler.program.save`, compiled for a co-simulated target
        (``sw.target.CHIP`` or ``sw.target.CHIP_4X8``); with a list, all
        share one target, and the models run in up to ``parallel``
        simulations at once, each running its share of them in turn.
    request : dict
        ``prompt_ids``, ``max_new_tokens`` and optionally ``temperature``,
        ``top_k``, ``seed``: the arguments of :func:`sw.runtime.decode.generate`.
    quiet : bool
        Send the simulator's output (``step i/n`` progress lines included)
        to ``sim.log`` in the run folder instead of the terminal.
    progress : callable, optional
        ``progress(index, done, total)`` while model ``index`` runs (polled
        twice a second; from one thread per simulation).
    parallel : int, optional
        How many simulations may run at once (default :func:`parallel_sims`).
        The models are split among them by their kernels per step. A
        model's tokens, logits and cycle counts are the same in any split;
        its ``wall_s`` is its own run's time in its simulation.

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
    models = [program.load(path) for path in paths]
    targets = [model.target for model in models]
    for target in targets:
        check_target(target)
    if any(target != targets[0] for target in targets):
        raise CompileError(f"the models run in one simulation of one chip; they were compiled for the targets "
                           f"{', '.join(dict.fromkeys(t.name for t in targets))}: compile them for one")
    split = groups([len(model.launches()) for model in models], parallel_sims() if parallel is None else parallel)
    if len(split) == 1:
        out = _decode(paths, request, progress, quiet, targets[0])
        return out if several else out[0]
    # Built (or found) once before the simulations start, which then only share it.
    try:
        harness.build(TARGET_UNITS[targets[0].name], log=(lambda line: None) if quiet else print)
    except RuntimeError as error:
        raise SimulationError(f"decode on the co-simulated chip did not finish: {error}") from None

    def report(group):
        # A simulation numbers its models from 0; the caller, by their place in the list.
        return progress and (lambda index, done, total: progress(group[index], done, total))

    out = [None] * len(paths)
    with ThreadPoolExecutor(len(split), thread_name_prefix="openrdu-sim") as pool:
        runs = [(group, pool.submit(_decode, [paths[i] for i in group], _share(request, group), report(group),
                                    quiet, targets[0]))
                for group in split]
        # Every simulation ends before an error is raised: the first group's (the order of the models) wins.
        for group, run in runs:
            run.exception()
        for group, run in runs:
            for index, result in zip(group, run.result()):
                out[index] = result
    return out


def _share(request, group):
    """``request`` for the models ``group`` of a list: an ``orchestration`` list keeps their entries."""
    orchestration = request.get("orchestration")
    if isinstance(orchestration, (list, tuple)):
        return dict(request, orchestration=[orchestration[i] for i in group])
    return request


def _decode(paths, request, progress, quiet, target):
    """One simulation running the models at ``paths`` in turn; their results."""
    with tempfile.TemporaryDirectory(prefix="openrdu-decode-") as tmp:
        request_path, result_path = Path(tmp) / "request.json", Path(tmp) / "result.json"
        progress_path = Path(tmp) / "progress"
        request_path.write_text(json.dumps(request))
        env = {"OPENRDU_DECODE_PROGRAM": os.pathsep.join(str(p) for p in paths),
               "OPENRDU_DECODE_REQUEST": str(request_path), "OPENRDU_DECODE_RESULT": str(result_path)}
        run_chip_testbench("cosim.tb.run_decode", env, "decode", result_path, progress_path,
                           progress=progress, quiet=quiet, target=target)
        return json.loads(result_path.read_text())


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
    """Call ``progress`` with each run's step from ``path`` (lines ``index done total``) when it changes, until
    ``done`` is set, and once more then, so that the last steps written are reported."""
    seen = {}
    while True:
        finished = done.wait(0.5)
        try:
            steps = [tuple(map(int, line.split())) for line in path.read_text().splitlines()]
        except (OSError, ValueError):
            steps = []
        for step in steps:
            if len(step) == 3 and seen.get(step[0]) != step[1:]:
                seen[step[0]] = step[1:]
                progress(*step)
        if finished:
            return


def _last_error(log_path):
    """The last exception line of a cocotb log (``SomeError: message``), or None."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    found = [m.group(1) for m in map(_ERROR_LINE.search, lines) if m]
    return found[-1] if found else None
