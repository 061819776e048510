"""The ``openrdu`` command."""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="openrdu", description="OpenRDU: a co-simulated dataflow AI chip")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run a GEMV + bias + SiLU layer on the co-simulated chip and check it")
    sub.add_parser("fma-demo", help="run y = a*x + y on the co-simulated FMA unit and check it")
    from sw import compile_cli, decode_cli

    comp = sub.add_parser("compile", help="compile a Llama checkpoint into chip kernels and print a summary")
    comp.add_argument("checkpoint", metavar="CHECKPOINT_DIR")
    comp.add_argument("-o", "--output", required=True, metavar="PROGRAM", help="file to write the compiled model to")
    compile_cli.add_arguments(comp)
    comp.add_argument("--memory-map", action="store_true", help="also print every region of the memory map")
    comp.add_argument("--json", metavar="FILE", help="write the static per-token estimate as JSON")
    dec = sub.add_parser("decode", help="generate text with a checkpoint on the co-simulated chip or the fast model")
    decode_cli.add_arguments(dec)
    args = parser.parse_args(argv)
    if args.command == "compile":
        return compile_cli.main(args)
    if args.command == "decode":
        return decode_cli.main(args)
    if args.command == "demo":
        from sw import chip_demo

        return chip_demo.main()
    if args.command == "fma-demo":
        from sw import demo

        return demo.main()
    return 2


if __name__ == "__main__":
    sys.exit(main())
