"""Co-simulation: Verilator builds of the RTL driven by cocotb testbenches.

Importing ``cosim`` registers the ``"rtl"`` decode backend in
``sw.runtime.backends``: the command line imports ``cosim`` and picks a backend
by name, so ``sw`` never imports ``cosim``. The backend's work is in
:mod:`cosim.decode`, imported on first use (it loads the chip's RTL).
"""

from sw.runtime import backends as _backends


def _run_rtl(models, paths, request, progress):
    from cosim.decode import run_rtl

    return run_rtl(list(paths), request, progress=progress)


def _check_target(target):
    from cosim.decode import check_target

    check_target(target)


_backends.register(_backends.Backend(
    "rtl", run=_run_rtl, check_target=_check_target,
    notice="co-simulating {modes} on the RTL chip (Verilator; the first run builds it, about a minute)\n"))
