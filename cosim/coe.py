"""Composition of Experts on the RTL: the CoE controller driving the co-simulated chip, from outside cocotb.

:func:`run_coe` runs ``cosim/tb/run_coe.py`` on the ``chip`` unit's Verilator build (the target
``sw.target.CHIP``, so 16 MiB of HBM and 64 MiB of DDR) and returns what
:func:`sw.coe.controller.serve` returned there.
"""

import json
import tempfile
from pathlib import Path

from cosim.decode import check_target, run_chip_testbench
from cosim.tb.units_chip import TARGET


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
    check_target(library.target, (TARGET,))   # cosim/tb/run_coe.py runs on the chip unit only
    with tempfile.TemporaryDirectory(prefix="openrdu-coe-") as tmp:
        job = {"library": str(Path(library.directory).resolve()), "size": len(library),
               "compiled": {str(Path(k).resolve()): str(Path(v).resolve()) for k, v in compiled_files.items()},
               "requests": requests, "options": options}
        job_path, result_path, progress_path = Path(tmp) / "job.json", Path(tmp) / "result.json", Path(tmp) / "progress"
        job_path.write_text(json.dumps(job))
        env = {"OPENRDU_COE_JOB": str(job_path), "OPENRDU_COE_RESULT": str(result_path)}
        run_chip_testbench("cosim.tb.run_coe", env, "CoE", result_path, progress_path,
                           progress=progress and (lambda index, done, total: progress(done, total)))
        return json.loads(result_path.read_text())
