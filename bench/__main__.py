"""Run every benchmark: ``python -m bench [name ...]``."""

import sys

from bench import coe, compile as compile_bench, decode, hostile, looping, memory, numerics, prefill, speed, tiles, verify

BENCHES = {"numerics": numerics.main, "tiles": tiles.main, "memory": memory.main, "compile": compile_bench.main, "decode": decode.main,
           "speed": speed.main, "hostile": hostile.main, "looping": looping.main, "prefill": prefill.main, "coe": coe.main,
           "verify": verify.main}


def main(argv):
    names = argv or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; benchmarks: {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    for name in names:
        BENCHES[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
