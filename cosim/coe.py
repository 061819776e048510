"""Composition of Experts on the RTL: the CoE controller driving the co-simulated chip, from outside cocotb.

:func:`run_coe` runs ``cosim/tb/run_coe.py`` on the ``chip`` unit's Verilator build (the target
``sw.target.CHIP``, so 16 MiB of HBM and 64 MiB of DDR) and returns what
:func:`sw.coe.controller.serve` returned there.
"""

import json
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

from cosim import harness
from cosim.decode import _last_error, _watch, check_target
from cosim.tb.units_chip import UNITS
from sw.errors import SimulationError


def run_coe(library, requests, options, *, compiled_files, progress=None):
    """Serve ``requests`` with ``library`` on the co-simulated chip.

    Parameters
    ----------
    library : sw.coe.library.Library
        Built for ``sw.target.CHIP``; the testbench builds it again from ``library.directory``.
    requests : list of dict
        ``prompt_ids``, ``max_new_tokens``, ``expert`` (or None).
    options : dict
        Keyword arguments of :func:`sw.coe.controller.serve` (``slots``, ``policy``, ``mode``, ...).
    compiled_files : dict
        Checkpoint path -> saved program file of each model the library compiled (the testbench loads
        them instead of compiling).
    progress : callable, optional
        ``progress(done, total)`` after each request (polled twice a second).
    """
    check_target(library.target)
    with tempfile.TemporaryDirectory(prefix="openrdu-coe-") as tmp:
        job = {"library": str(Path(library.directory).resolve()), "size": len(library),
               "compiled": {str(Path(k).resolve()): str(Path(v).resolve()) for k, v in compiled_files.items()},
               "requests": requests, "options": options}
        job_path, result_path, progress_path = Path(tmp) / "job.json", Path(tmp) / "result.json", Path(tmp) / "progress"
        job_path.write_text(json.dumps(job))
        unit = replace(UNITS["chip"], testbench="cosim.tb.run_coe",
                       env={"OPENRDU_COE_JOB": str(job_path), "OPENRDU_COE_RESULT": str(result_path),
                            "OPENRDU_DECODE_PROGRESS": str(progress_path)})
        done = threading.Event()
        watcher = None
        if progress:
            watcher = threading.Thread(target=_watch, args=(progress_path, lambda i, d, t: progress(d, t), done),
                                       daemon=True)
            watcher.start()
        try:
            results = harness.run(unit, quiet=True, log=lambda line: None)
        except RuntimeError as error:
            raise SimulationError(f"CoE on the co-simulated chip did not finish: {error}") from None
        finally:
            done.set()
            if watcher:
                watcher.join()
        if not results.ok or not result_path.exists():
            log_path = results.xml.parent / "sim.log"
            cause = _last_error(log_path)
            raise SimulationError(f"CoE on the co-simulated chip failed{f': {cause}' if cause else ''}; see {log_path}")
        return json.loads(result_path.read_text())
