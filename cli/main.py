"""The ``openrdu`` command.

An error the user can fix (:class:`sw.errors.OpenRDUError`) is one line, ``openrdu COMMAND: error: ...``,
with exit status 1; a bad command-line value is argparse's line with exit status 2. Any other exception
is a bug in OpenRDU and keeps its traceback.
"""

import argparse
import os
import sys

from sw.errors import OpenRDUError


def main(argv=None):
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (`openrdu compile --ir | head`): stop quietly, as other commands do, and
        # point stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, the status a shell reports for a command ended by a closed pipe


def _main(argv):
    parser = argparse.ArgumentParser(prog="openrdu", description="OpenRDU: a co-simulated dataflow AI chip")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run a GEMV + bias + SiLU layer on the co-simulated chip and check it")
    sub.add_parser("fma-demo", help="run y = a*x + y on the co-simulated FMA unit and check it")
    import cosim  # noqa: F401  (registers the "rtl" backend that --backend picks)
    from cli import compile as compile_cli, decode as decode_cli

    comp = sub.add_parser("compile", help="compile a Llama checkpoint into chip kernels and print a summary")
    comp.add_argument("checkpoint", metavar="CHECKPOINT_DIR")
    comp.add_argument("-o", "--output", required=True, metavar="PROGRAM", help="file to write the compiled model to")
    compile_cli.add_arguments(comp)
    comp.add_argument("--memory-map", action="store_true", help="also print every region of the memory map")
    comp.add_argument("--json", metavar="FILE", help="write the static per-token estimate as JSON")
    comp.add_argument("--ir", action="store_true", help="print the decode-step graph and each compiler pass's result")
    dec = sub.add_parser("decode", help="generate text with a checkpoint on the co-simulated chip or the fast model")
    decode_cli.add_arguments(dec)
    from cli import sweep as sweep_cli

    sweep_cli.add_arguments(sub.add_parser("sweep", help="a design-space sweep on the fast model, run on Ray"))
    from cli import coe as coe_cli

    coe_cli.add_arguments(sub.add_parser("coe", help="serve requests with Composition of Experts: router, "
                                                    "expert cache in HBM, switches from DDR"))
    args = parser.parse_args(argv)
    try:
        if args.command == "compile":
            return compile_cli.main(args)
        if args.command == "decode":
            decode_cli.check_arguments(dec, args)
            return decode_cli.main(args)
        if args.command == "sweep":
            return sweep_cli.main(args)
        if args.command == "coe":
            return coe_cli.main(args)
    except OpenRDUError as error:
        raise SystemExit(f"openrdu {args.command}: error: {decode_cli.escape(str(error), keep='')}") from None
    if args.command == "demo":
        from cli import chip_demo

        return chip_demo.main()
    if args.command == "fma-demo":
        from cli import demo

        return demo.main()
    return 2


if __name__ == "__main__":
    sys.exit(main())
