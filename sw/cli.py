"""The ``openrdu`` command."""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="openrdu", description="OpenRDU: a co-simulated dataflow AI chip")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run a GEMV + bias + SiLU layer on the co-simulated chip and check it")
    sub.add_parser("fma-demo", help="run y = a*x + y on the co-simulated FMA unit and check it")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from sw import chip_demo

        return chip_demo.main()
    if args.command == "fma-demo":
        from sw import demo

        return demo.main()
    return 2


if __name__ == "__main__":
    sys.exit(main())
