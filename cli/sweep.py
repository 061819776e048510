"""``openrdu sweep SPEC``: a design-space sweep on the fast model, in parallel with Ray (see :mod:`sw.sweep`).

Writes the points and their results as one JSON file and a PNG plot of
cycles per token and roofline fraction per point; prints a line per point
to stderr as it finishes.
"""

import json
from pathlib import Path

from cli.decode import escape
from sw.errors import OpenRDUError


def add_arguments(parser):
    parser.add_argument("spec", metavar="SPEC", help="sweep spec, TOML (.toml) or JSON (.json); see docs/sweep.md")
    parser.add_argument("-o", "--output", metavar="JSON",
                        help="file for the results (default: build/sweep/<spec name>.json)")
    parser.add_argument("--plot", metavar="PNG", help="file for the plot (default: the JSON's path with .png)")
    parser.add_argument("--address", metavar="ADDR",
                        help="Ray cluster to run on (e.g. auto, ray://host:10001); default: a local Ray instance")
    parser.add_argument("--cpus", type=int, metavar="N", help="CPUs of the local Ray instance (default: all)")
    parser.add_argument("--serial", action="store_true", help="run the points one by one in this process")


def main(args):
    from sw import sweep

    if args.cpus is not None and args.cpus < 1:
        raise SystemExit(f"openrdu sweep: error: --cpus must be at least 1, not {args.cpus}")
    output = Path(args.output or Path("build") / "sweep" / f"{Path(args.spec).stem}.json")
    png = Path(args.plot) if args.plot else output.with_suffix(".png")
    try:
        spec = sweep.load_spec(args.spec)
        result = sweep.run_sweep(spec, serial=args.serial, address=args.address, num_cpus=args.cpus,
                                 log=sweep.stderr_log)
    except OpenRDUError as e:
        raise SystemExit(f"openrdu sweep: error: {escape(str(e), keep='')}") from None
    except ConnectionError as e:
        raise SystemExit(f"openrdu sweep: error: cannot reach the Ray cluster at {args.address}: {e}")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2))
        png.parent.mkdir(parents=True, exist_ok=True)
        sweep.plot(result, png)
    except OSError as e:
        raise SystemExit(f"openrdu sweep: error: cannot write {e.filename}: {e.strerror}")
    print(f"{result['fits']}/{len(result['points'])} points ran ({result['runner']}, {result['wall_s']:.1f} s); "
          f"wrote {output} and {png}")
    return 0
