"""Every design with a cocotb testbench, by the name ``make sim-<name>`` uses.

Each module ``cosim/tb/units_*.py`` defines a dict ``UNITS`` of
:class:`~cosim.harness.SimUnit`; they are gathered here, so adding a
testbench touches no shared file.
"""

import importlib
import pkgutil

import cosim.tb


def _discover():
    units = {}
    for info in sorted(pkgutil.iter_modules(cosim.tb.__path__), key=lambda i: i.name):
        if not info.name.startswith("units_"):
            continue
        module = importlib.import_module(f"cosim.tb.{info.name}")
        for name, unit in module.UNITS.items():
            if name in units:
                raise RuntimeError(f"simulation unit {name!r} defined twice (again in cosim/tb/{info.name}.py)")
            units[name] = unit
    return units


UNITS = _discover()
