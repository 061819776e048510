"""Command line for the co-simulation harness: ``python -m cosim {list,run}``."""

import argparse
import sys

from cosim import harness
from cosim.units import UNITS


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m cosim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print the names of the simulation units")
    run = sub.add_parser("run", help="build (or reuse) a unit's Verilator model and run its cocotb tests")
    run.add_argument("unit", help="unit name, see `list`")
    run.add_argument("--waves", action="store_true", help="record an FST waveform under build/")
    run.add_argument("--testcase", help="run only this cocotb test")
    args = parser.parse_args(argv)

    if args.command == "list":
        print(" ".join(UNITS))
        return 0
    if args.unit not in UNITS:
        print(f"unknown simulation unit {args.unit!r}; units: {', '.join(UNITS)}", file=sys.stderr)
        return 2
    try:
        results = harness.run(UNITS[args.unit], waves=args.waves, testcase=args.testcase)
    except RuntimeError as error:
        # The harness's errors name the setting, the build or the simulation that failed (and its log).
        print(f"python -m cosim: {error}", file=sys.stderr)
        return 1
    print(f"[cosim] {args.unit}: {results.tests} tests, {results.failed} failed")
    return 0 if results.ok else 1


if __name__ == "__main__":
    sys.exit(main())
