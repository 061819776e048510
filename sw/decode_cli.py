"""``openrdu decode``: compile a checkpoint and generate text on the co-simulated chip or the fast model.

Prints the text and a report: cycles per token and where they go, simulated
tokens per second at the chip's nominal clock, HBM bandwidth as a fraction
of peak, bytes per tier, and wall-clock time. ``--compare`` runs the fused
and the op-by-op (unfused) programs on the same backend and prints them side
by side; ``--json`` prints the same as one JSON object.
"""

import asyncio
import json
import sys
import time
from pathlib import Path

from sw.compile_cli import ERRORS, add_arguments as add_compile_arguments, cached_compile
from sw.runtime.chip import ChipError
from sw.runtime.decode import DecodeError, check_request
from sw.target import TARGETS


def add_arguments(parser):
    parser.add_argument("--checkpoint", required=True, metavar="DIR", help="Hugging Face Llama checkpoint folder")
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", metavar="TEXT", help="prompt text (needs the checkpoint's tokenizer)")
    prompt.add_argument("--prompt-ids", metavar="IDS", help="comma-separated token ids, e.g. 0,449,323")
    parser.add_argument("--max-new-tokens", type=int, default=16, metavar="N")
    parser.add_argument("--backend", choices=("rtl", "model"), default="rtl",
                        help="rtl: the Verilator co-simulation; model: the bit-identical fast model")
    add_compile_arguments(parser)
    parser.add_argument("--compare", action="store_true", help="run fused and unfused and report both")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (default) decodes greedily")
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights-tier", choices=("hbm", "ddr"), default="hbm",
                        help="ddr: load weights into DDR and stage them into HBM with the copy engine")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")


def _tokenizer(checkpoint):
    folder = Path(checkpoint)
    if not (folder / "tokenizer.json").is_file():
        return None
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(folder))


def _prompt_ids(args, tokenizer):
    if args.prompt_ids is not None:
        try:
            return [int(t) for t in args.prompt_ids.split(",") if t.strip()]
        except ValueError:
            raise DecodeError(f"--prompt-ids {args.prompt_ids!r} is not a comma-separated list of integers") from None
    if tokenizer is None:
        raise DecodeError(f"{args.checkpoint} has no tokenizer.json; give --prompt-ids instead of --prompt")
    return tokenizer(args.prompt).input_ids if args.prompt else []


class Progress:
    """A one-line progress bar on stderr, for runs long enough to want one."""

    def __init__(self, label, enabled):
        self.label, self.enabled, self.start = label, enabled, time.perf_counter()

    def __call__(self, done, total):
        if not self.enabled:
            return
        width = 30
        filled = width * done // max(total, 1)
        elapsed = time.perf_counter() - self.start
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] step {done}/{total} "
                         f"{elapsed:.0f} s")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run(modes, compiled, paths, request, backend, show_progress):
    """Generate with each mode's compiled model on ``backend``; returns mode -> the runtime's result dict.

    On the RTL every mode runs in one simulation of the chip, so the Verilator model is set up once.
    """
    bars = {mode: Progress(f"{mode:>7} on {backend}", show_progress) for mode in modes}
    if backend == "model":
        from sw.runtime.decode import generate
        from sw.runtime.device import ModelDevice

        return {mode: asyncio.run(generate(ModelDevice(compiled[mode].target), compiled[mode],
                                           request["prompt_ids"], max_new_tokens=request["max_new_tokens"],
                                           temperature=request["temperature"], top_k=request["top_k"],
                                           seed=request["seed"], weights_tier=request["weights_tier"],
                                           progress=bars[mode]))
                for mode in modes}
    from cosim.decode import run_rtl

    if show_progress:
        sys.stderr.write(f"co-simulating {' and '.join(modes)} on the RTL chip (Verilator; the first run builds "
                         f"it, a few minutes)\n")
    out = run_rtl([paths[mode] for mode in modes], request,
                  progress=lambda index, done, total: bars[modes[index]](done, total))
    return dict(zip(modes, out))


ROWS = [
    ("cycles per token", "cycles_per_token", "{:,.0f}"),
    ("  in kernels", "kernel_cycles_per_token", "{:,.0f}"),
    ("  program load", "program_load_cycles_per_token", "{:,.0f}"),
    ("  host launches", "launch_cycles_per_token", "{:,.0f}"),
    ("  logits to host", "host_io_cycles_per_token", "{:,.0f}"),
    ("kernels per token", "kernels_per_token", "{:.0f}"),
    ("tokens/s at clock", "tokens_per_s_simulated", "{:,.0f}"),
    ("HBM bytes per token", "hbm_bytes_per_token", "{:,.0f}"),
    ("DDR bytes per token", "ddr_bytes_per_token", "{:,.0f}"),
    ("HBM bandwidth used", "hbm_bandwidth_fraction", "{:.1%}"),
    ("  during kernels", "hbm_bandwidth_fraction_in_kernels", "{:.1%}"),
    ("roofline cycles/token", "roofline_cycles_per_token", "{:,.0f}"),
    ("steps", "steps", "{}"),
    ("wall-clock", "wall_s", "{:.1f} s"),
]


def print_report(results, compiled, text, prompt_ids):
    first = next(iter(results.values()))
    r0 = first["report"]
    t = compiled[next(iter(results))].target
    print(f"prompt: {len(prompt_ids)} tokens; generated {len(first['tokens'])}")
    if text is not None:
        print("-" * 60)
        print(text)
        print("-" * 60)
    else:
        print(f"tokens: {first['tokens']}")
    print(f"backend: {'Verilator co-simulation of the RTL' if r0['backend'] == 'rtl' else 'fast model'}; "
          f"target {t.describe()}; clock {t.clock_hz / 1e9:g} GHz; host launch {t.host_launch_cycles} cycles")
    modes = list(results)
    print(f"{'':<24}" + "".join(f"{m:>14}" for m in modes))
    for label, key, fmt in ROWS:
        print(f"{label:<24}" + "".join(f"{fmt.format(results[m]['report'][key]):>14}" for m in modes))
    if len(modes) == 2:
        f, u = (results[m]["report"]["cycles_per_token"] for m in ("fused", "unfused"))
        same = results["fused"]["tokens"] == results["unfused"]["tokens"]
        kf, ku = (results[m]["report"]["kernel_cycles_per_token"] for m in ("fused", "unfused"))
        print(f"fused is {u / f:.2f}x faster per token than op-by-op ({ku / kf:.2f}x in kernel cycles alone; the "
              f"rest is launches at the assumed {t.host_launch_cycles} cycles and Program Load); "
              f"same tokens: {same}")
    load = r0["load"]
    print(f"load: {load['image_bytes']:,} bytes of weights, tables and programs "
          f"({load['host_link_cycles']:,.0f} cycles over the host link"
          + (f"; {load['ddr_to_hbm_bytes']:,} staged DDR->HBM in {load['ddr_to_hbm_cycles']:,.0f} cycles"
             if load["weights_tier"] == "ddr" else "") + ")")


def main(args):
    modes = ["fused", "unfused"] if args.compare else ["unfused" if args.unfused else "fused"]
    target = TARGETS[args.target]
    try:
        tokenizer = _tokenizer(args.checkpoint) if Path(args.checkpoint).is_dir() else None
        compiled, paths = {}, {}
        for mode in modes:
            compiled[mode], paths[mode] = cached_compile(args.checkpoint, target, mode, args.context)
        prompt_ids = _prompt_ids(args, tokenizer)
        check_request(compiled[modes[0]], prompt_ids, args.max_new_tokens, temperature=args.temperature,
                      top_k=args.top_k)
        request = {"prompt_ids": prompt_ids, "max_new_tokens": args.max_new_tokens,
                   "temperature": args.temperature, "top_k": args.top_k, "seed": args.seed,
                   "weights_tier": args.weights_tier}
        if args.backend == "rtl":
            from cosim.decode import check_target

            check_target(target)
        results = run(modes, compiled, paths, request, args.backend, not args.json and sys.stderr.isatty())
    except ERRORS + (DecodeError, ChipError, AssertionError, RuntimeError) as e:
        raise SystemExit(f"openrdu decode: error: {e}")
    first = results[modes[0]]
    text = tokenizer.decode(first["prompt_ids"] + first["tokens"], skip_special_tokens=True) if tokenizer else None
    if args.json:
        out = {"text": text, "prompt_ids": first["prompt_ids"], "tokens": first["tokens"],
               "backend": args.backend, "target": target.name}
        out.update({mode: {k: v for k, v in results[mode].items() if k not in ("prompt_ids",)} for mode in modes})
        print(json.dumps(out, indent=2))
    else:
        print_report(results, compiled, text, prompt_ids)
    return 0
