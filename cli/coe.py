"""``openrdu coe``: serve a request file with Composition of Experts on the fast model or the co-simulated chip.

Loads the expert library (``--experts``: trained experts + variants up to ``--library-size``), checks
every request, then routes, schedules, switches and decodes (:mod:`sw.coe.controller`). Prints each
request's expert and text, a per-request table and the trace's summary; ``--baseline host`` or
``hbm`` serves the same trace again the GPU way (switching over the host link) or with every expert
resident in HBM, and prints the ratios. ``--json`` prints one JSON object.

Request file: one JSON object per line, ``{"prompt": str, "max_new_tokens": int, "expert": name}``
(``expert`` optional: without it the router picks).
"""

import asyncio
import json
from pathlib import Path

from cli.compile import cached_compile
from cli.decode import Progress, count, escape, positive_int, progress_mode
from sw.coe.cache import POLICIES
from sw.coe.controller import LOOKAHEAD, check_requests, serve
from sw.coe.library import Library
from sw.coe.slots import ORCHESTRATIONS, coe_target, plan
from sw.errors import CoEError
from sw.target import CHIP

MAX_REQUEST_FILE = 64 << 20
RTL_LIBRARY = 40          # experts that fit the co-simulated chip's 64 MiB of DDR


def add_arguments(parser):
    parser.add_argument("--experts", required=True, metavar="DIR", help="expert library folder (manifest.json)")
    parser.add_argument("--requests", required=True, metavar="FILE.jsonl",
                        help='one {"prompt", "max_new_tokens", optional "expert"} object per line')
    parser.add_argument("--backend", choices=("model", "rtl"), default="model",
                        help="model: the fast model (256 MiB of DDR); rtl: the co-simulated chip (64 MiB of DDR)")
    parser.add_argument("--cache-slots", type=positive_int, default=4, metavar="K", help="HBM expert slots")
    parser.add_argument("--policy", choices=tuple(POLICIES), default="lru", help="slot eviction policy")
    parser.add_argument("--baseline", choices=("host", "hbm"), help="also serve the trace the GPU way (host) "
                                                                     "or with every expert in HBM")
    parser.add_argument("--library-size", type=positive_int, metavar="N",
                        help=f"experts in the library (default 150 on the model, {RTL_LIBRARY} on the rtl)")
    parser.add_argument("--batch", type=positive_int, default=8, help="requests routed together")
    parser.add_argument("--no-prefetch", action="store_true", help="copy experts only when a request needs one")
    parser.add_argument("--lookahead", type=count, default=LOOKAHEAD, metavar="N",
                        help=f"prefetch experts for up to N scheduled requests ahead (at most slots - 1; "
                             f"default {LOOKAHEAD})")
    parser.add_argument("--orchestration", choices=ORCHESTRATIONS, default="host",
                        help="who issues each decode step's kernels: the host (every Program Load, Argument Load and "
                             "Execute), or the chip's sequencer walking the slot's launch list (each slot then holds "
                             "its own lists, so HBM may hold one slot fewer)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")


def read_requests(path):
    """The request file as a list of dicts; CoEError naming the file and line for anything malformed."""
    path = Path(path)
    if not path.is_file():
        raise CoEError(f"{path}: no such request file")
    if path.stat().st_size > MAX_REQUEST_FILE:
        raise CoEError(f"{path}: larger than {MAX_REQUEST_FILE >> 20} MiB")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise CoEError(f"{path}: not UTF-8 text") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise CoEError(f"{path} line {n}: not JSON ({error.msg})") from None
        ok = (isinstance(row, dict) and isinstance(row.get("prompt"), str) and row["prompt"]
              and type(row.get("max_new_tokens")) is int and row["max_new_tokens"] >= 1
              and (row.get("expert") is None or isinstance(row["expert"], str))
              and not set(row) - {"prompt", "max_new_tokens", "expert"})
        if not ok:
            raise CoEError(f'{path} line {n}: expected {{"prompt": non-empty text, "max_new_tokens": integer >= 1, '
                           f'optional "expert": name}}')
        out.append(row)
    if not out:
        raise CoEError(f"{path}: no requests")
    return out


def prepare(args):
    """Library, target and the requests as token ids, all checked before any device exists."""
    target = CHIP if args.backend == "rtl" else coe_target()
    size = args.library_size or (RTL_LIBRARY if args.backend == "rtl" else 150)
    rows = read_requests(args.requests)
    files = {}

    def compile(path, target):
        compiled, files[str(path)] = cached_compile(path, target, "fused", None)
        return compiled

    library = Library(args.experts, target, size=size, compile=compile)
    library.compiled_files = files
    requests = [{"prompt_ids": library.encode(r["prompt"]), "max_new_tokens": r["max_new_tokens"],
                 "expert": r.get("expert")} for r in rows]
    check_requests(library, requests)
    plan(library, args.cache_slots, orchestration=args.orchestration)
    if args.baseline == "hbm":
        try:
            plan(library, len(library), experts_in_ddr=False, orchestration=args.orchestration)
        except CoEError as e:
            raise CoEError(f"--baseline hbm keeps every expert of the library in its own HBM slot: {e}") from None
    return library, requests


def run(args, library, requests, mode):
    bar = Progress(f"coe ({mode}) on {args.backend}", progress_mode(args), unit="request")
    options = dict(slots=args.cache_slots, policy=args.policy, mode=mode, batch=args.batch,
                   prefetch=not args.no_prefetch, lookahead=args.lookahead, orchestration=args.orchestration)
    if args.backend == "rtl":
        from cosim.coe import run_coe

        return run_coe(library, requests, options, compiled_files=library.compiled_files, progress=bar)
    from sw.runtime.device import ModelDevice

    return asyncio.run(serve(ModelDevice(library.target), library, requests, progress=bar, **options))


def main(args):
    library, requests = prepare(args)
    results = {"ddr": run(args, library, requests, "ddr")}
    if args.baseline:
        results[args.baseline] = run(args, library, requests, args.baseline)
    coe = results["ddr"]
    for r in coe["requests"]:
        r["text"] = library.decode(requests[r["index"]]["prompt_ids"] + r["tokens"])
    if args.json:
        print(json.dumps({"experts": len(library), "trained": library.trained, "target": library.target.name,
                          **{mode: res for mode, res in results.items()}}, indent=2, default=float))
        return 0
    for r in coe["requests"]:
        print(f"[{r['index'] + 1}] {r['expert']} ({'routed' if r['routed'] else 'named'}, "
              f"{'hit' if r['hit'] else 'miss'}): {escape(r['text'] or str(r['tokens']))!r}")
    print(f"\n{len(library)} experts ({len(library.trained)} checkpoints, the rest variants) of "
          f"{library.slot_bytes:,} bytes in DDR; "
          f"{coe['plan']['slots']} HBM slots ({args.policy}); backend {coe['backend']}; kernels issued by the "
          f"{coe['orchestration']}; target "
          f"{library.target.describe()}")
    print(f"{'req':>4} {'expert':<14} {'hit':>4} {'router':>10} {'switch':>10} {'hidden':>10} {'ttft':>11} "
          f"{'latency':>11}")
    for r in coe["requests"]:
        print(f"{r['index'] + 1:>4} {r['expert'][:14]:<14} {'yes' if r['hit'] else 'no':>4} "
              f"{r['router_cycles']:>10,.0f} "
              f"{r['switch_cycles']:>10,.0f} {r['hidden_cycles']:>10,.0f} {r['ttft_cycles']:>11,.0f} "
              f"{r['latency_cycles']:>11,.0f}")
    print(f"\n{'':<26}" + "".join(f"{mode:>14}" for mode in results))
    for label, key, fmt in (("hit rate", "hit_rate", "{:.1%}"), ("switches", "switches", "{}"),
                            ("switch cycles", "switch_cycles", "{:,.0f}"),
                            ("  hidden by prefetch", "hidden_fraction", "{:.1%}"),
                            ("mean latency (cycles)", "mean_latency_cycles", "{:,.0f}"),
                            ("p99 latency (cycles)", "p99_latency_cycles", "{:,.0f}"),
                            ("mean TTFT (cycles)", "mean_ttft_cycles", "{:,.0f}"),
                            ("throughput (tokens/s)", "tokens_per_s", "{:,.0f}")):
        print(f"{label:<26}" + "".join(f"{fmt.format(res['summary'][key]):>14}" for res in results.values()))
    print(f"capacity checks {coe['capacity_checks']}, violations {coe['capacity_violations']}; prefetch overlap "
          f"{coe['overlap']} (lookahead {coe['lookahead']}: copies started beside the decode; hidden = what the "
          f"chip's kernels and Program Loads covered)")
    if args.baseline:
        base = results[args.baseline]["summary"]
        same = all(a["logits_sha"] == b["logits_sha"] for a, b in zip(coe["requests"],
                                                                     results[args.baseline]["requests"]))
        ratio = base["mean_latency_cycles"] / coe["summary"]["mean_latency_cycles"]
        print(f"{args.baseline} baseline / DDR->HBM: mean latency {ratio:.2f}x, "
              f"total {base['total_cycles'] / coe['summary']['total_cycles']:.2f}x; same outputs: {same}")
    return 0
