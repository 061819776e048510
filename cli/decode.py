"""``openrdu decode``: compile a checkpoint and generate text on the co-simulated chip or the fast model.

Prints the text and a report: cycles per token and where they go, simulated
tokens per second at the chip's nominal clock, HBM bandwidth as a fraction
of peak, bytes per tier, and wall-clock time, each figure marked measured,
modelled or assumed. ``--orchestration chip`` lets the chip's sequencer issue
the kernels of each step. ``--compare`` runs the op-by-op (unfused)
program and the fused one orchestrated by the host and by the chip on the
same backend and prints them side by side; ``--json`` prints the same as one
JSON object.
"""

import argparse
import json
import math
import re
import shutil
import sys
import threading
import time
import unicodedata
from pathlib import Path

from cli.compile import add_arguments as add_compile_arguments, cached_compile, program_mode
from sw.compiler.checkpoint import check_folder, load_tokenizer
from sw.errors import DecodeError
from sw.runtime import backends
from sw.runtime.decode import ORCHESTRATIONS, check_request
from sw.runtime.trace import chrome_trace
from sw.target import load_target

MAX_TOKEN_ID_DIGITS = 9                 # ids below 10**9: far past any vocabulary, and int() stays cheap
_DECIMAL = re.compile(r"([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,4})?")
_IDS = re.compile(r"[0-9]{1,%d}(,[0-9]{1,%d})*" % (MAX_TOKEN_ID_DIGITS, MAX_TOKEN_ID_DIGITS))


def _integer(text, what):
    if not text.isascii() or not re.fullmatch(r"-?[0-9]+", text) or len(text) > 30:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return int(text)


def seed(text):
    """A seed for numpy's generator: an integer from 0 to 2**32 - 1."""
    value = _integer(text, "an integer seed")
    if not 0 <= value < 1 << 32:
        raise argparse.ArgumentTypeError(f"{value} is outside 0 to {(1 << 32) - 1}")
    return value


def positive_int(text):
    value = _integer(text, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def count(text):
    value = _integer(text, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give 0 (no limit) or a positive integer")
    return value


def temperature(text):
    """A finite number >= 0 in plain decimal notation (0 decodes greedily)."""
    value = float(text) if _DECIMAL.fullmatch(text) else math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not 0 (greedy) or a positive number")
    return value


def token_ids(text):
    """``int(,int)*`` of ASCII digits, each id below 10**9: a list of ints."""
    if not _IDS.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is not a comma-separated list of token "
                                         f"ids (e.g. 0,449,323; each at most {MAX_TOKEN_ID_DIGITS} digits)")
    return [int(t) for t in text.split(",")]


def prompt_text(text):
    """The prompt as given, refused when the command line held bytes that are not UTF-8.

    Python hands such bytes over as lone surrogates (``surrogateescape``: byte b as U+DC00 + b).
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(text[error.start])
        what = f"byte {code - 0xDC00:#04x}" if 0xDC80 <= code <= 0xDCFF else f"a lone surrogate U+{code:04X}"
        raise argparse.ArgumentTypeError(f"not valid UTF-8 ({what} at character {error.start})") from None
    return text


# Bidirectional overrides and isolates reorder what a terminal shows (CVE-2021-42574).
_BIDI = set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A))


def escape(text, keep="\n\t"):
    """``text`` safe to print: control characters (C0, DEL, C1, so ANSI escapes too), line and paragraph
    separators and bidi controls as ``\\xNN`` / ``\\uNNNN``, except the characters in ``keep``."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in keep or not (unicodedata.category(ch) in ("Cc", "Zl", "Zp", "Cs") or code in _BIDI):
            out.append(ch)
        else:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return "".join(out)


def add_arguments(parser):
    parser.add_argument("--checkpoint", required=True, metavar="DIR", help="Hugging Face Llama checkpoint folder")
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", type=prompt_text, metavar="TEXT",
                        help="prompt text (needs the checkpoint's tokenizer)")
    prompt.add_argument("--prompt-ids", type=token_ids, metavar="IDS",
                        help="comma-separated token ids, e.g. 0,449,323 (the tokenizer is not loaded)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=16, metavar="N")
    parser.add_argument("--backend", choices=tuple(backends.BACKENDS), default="rtl",
                        help="rtl: the Verilator co-simulation; model: the bit-identical fast model")
    add_compile_arguments(parser)
    parser.add_argument("--orchestration", choices=ORCHESTRATIONS, default="host",
                        help="host: the host issues every kernel launch (a round trip each, the paper's Fused+SO); "
                             "chip: the chip's sequencer walks the step's launch list, one host command per "
                             "token (Fused+HO)")
    parser.add_argument("--compare", action="store_true",
                        help="run every mode (unfused, fused host-orchestrated, fused chip-orchestrated, "
                             "looped) and report them side by side")
    parser.add_argument("--temperature", type=temperature, default=0.0, help="0 (default) decodes greedily")
    parser.add_argument("--top-k", type=count, default=0, help="sample from the k most likely tokens "
                                                              "(needs --temperature > 0; 0: no limit)")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the sampler, 0 to 2**32 - 1")
    parser.add_argument("--weights-tier", choices=("hbm", "ddr"), default="hbm",
                        help="ddr: load weights into DDR and stage them into HBM with the copy engine")
    parser.add_argument("--trace", metavar="FILE", help="write a Chrome trace JSON of every launch, Program Load "
                        "and read-back, each PCU's and PMU's busy and stalled cycles, each AGCU's streams and the "
                        "HBM and DDR bytes per 1,000 cycles (opens in ui.perfetto.dev)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")


def check_arguments(parser, args):
    """What argparse cannot check one value at a time; ``parser.error`` (exit 2) on a conflict."""
    if args.compare and (args.unfused or args.looped or args.orchestration != "host"):
        parser.error("argument --compare: runs every mode itself; leave out --unfused, --looped and "
                     "--orchestration")
    if args.top_k and args.temperature <= 0:
        parser.error(f"argument --top-k: {args.top_k} needs --temperature > 0 (greedy decoding takes the "
                     f"most likely token)")


class Progress:
    """Progress on stderr: a one-line bar on a terminal, else a line at the start, every ``step_percent``
    and at the end, so a long run into a log or a pipe is not silent. ``mode`` is "bar", "lines" or None."""

    def __init__(self, label, mode, step_percent=5, unit="step"):
        self.label, self.mode, self.step, self.unit = label, mode, step_percent, unit
        self.start, self.shown = time.perf_counter(), None

    def __call__(self, done, total):
        if self.mode is None:
            return
        elapsed = time.perf_counter() - self.start
        if self.mode == "bar":
            sys.stderr.write(f"\r{self.bar(done, total)}" + ("\n" if done == total else ""))
        else:
            if self.shown is None:
                sys.stderr.write(f"{self.label}: {total} {self.unit}s\n")
                self.shown = 0
            percent = 100 * done // max(total, 1)
            if done < total and percent < self.shown + self.step:
                return
            self.shown = percent
            sys.stderr.write(f"{self.label}: {self.unit} {done}/{total} ({percent}%) {elapsed:.0f} s\n")
        sys.stderr.flush()

    def bar(self, done, total, width=30):
        """The bar's text: label, ``width`` marks, steps done and seconds since the start."""
        filled = width * done // max(total, 1)
        return (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.unit} {done}/{total} "
                f"{time.perf_counter() - self.start:.0f} s")


class Board:
    """The :class:`Progress` of several runs, reported as ``board(index, done, total)`` from any thread.

    Into a log each run writes its lines. On a terminal the runs under way share one line (several
    simulations run at once on the RTL), and a run that ends leaves its full bar on a line of its own.
    """

    def __init__(self, bars):
        self.bars, self.lock, self.running = list(bars), threading.Lock(), {}

    def __call__(self, index, done, total):
        with self.lock:
            bar = self.bars[index]
            if bar.mode != "bar":
                bar(done, total)
                return
            self.running[index] = (done, total)
            text = ""
            if done >= total:
                del self.running[index]
                text = f"\r{bar.bar(done, total)}\033[K\n"
            if len(self.running) == 1:
                (i, (d, t)), = self.running.items()
                text += f"\r{self.bars[i].bar(d, t)}\033[K"
            elif self.running:
                line = "  ".join(f"{self.bars[i].label.strip()} {d}/{t}" for i, (d, t) in sorted(self.running.items()))
                line = f"{line}  {time.perf_counter() - bar.start:.0f} s"
                text += f"\r{line[:shutil.get_terminal_size().columns - 1]}\033[K"
            sys.stderr.write(text)
            sys.stderr.flush()


def progress_mode(args):
    """"bar" on a terminal, "lines" into a file or pipe, None with --json."""
    return None if args.json else "bar" if sys.stderr.isatty() else "lines"


# A mode of --compare: its compiled program (fused, unfused or looped) and who orchestrates its launches.
MODES = {"unfused": ("unfused", "host"), "fused": ("fused", "host"), "fused_chip": ("fused", "chip"),
         "looped": ("looped", "chip")}


def mode_name(program, orchestration):
    """The mode's name in reports: ``fused``, ``unfused``, with ``_chip`` when the chip orchestrates, or
    ``looped`` (chip-orchestrated) and ``looped_host``."""
    if program == "looped":
        return "looped" if orchestration == "chip" else "looped_host"
    return program if orchestration == "host" else f"{program}_chip"


def run(modes, compiled, paths, request, backend, progress=None):
    """Generate in each mode on ``backend``; returns mode -> the runtime's result dict.

    ``modes`` maps a name to ``(program, orchestration)``; ``compiled`` and
    ``paths`` map a program (``"fused"``, ``"unfused"``) to its compiled
    model and file. ``progress`` is a :class:`Progress` mode: "bar", "lines" or None.

    On the RTL the modes run in as many simulations at once as the process has CPUs
    (``OPENRDU_PARALLEL_SIMS`` sets the count; 1 runs every mode in one simulation), each mode's result
    the same either way.
    """
    names = list(modes)
    width = max(len(n) for n in names)
    bars = {n: Progress(f"{n} on {backend}" if progress == "lines" else f"{n:>{width}} on {backend}", progress)
            for n in names}
    runner = backends.get(backend)
    if progress and runner.notice:
        sys.stderr.write(runner.notice.format(modes=", ".join(names)))
    request = dict(request, orchestration=[modes[n][1] for n in names])
    out = runner.run([compiled[modes[n][0]] for n in names], [paths[modes[n][0]] for n in names], request,
                     Board(bars[n] for n in names))
    return dict(zip(names, out))


ROWS = [
    ("cycles per token", "cycles_per_token", "{:,.0f}"),
    ("  in kernels", "kernel_cycles_per_token", "{:,.0f}"),
    ("  program load", "program_load_cycles_per_token", "{:,.0f}"),
    ("  launches", "launch_cycles_per_token", "{:,.0f}"),
    ("    host round trips", "host_launch_cycles_per_token", "{:,.0f}"),
    ("    on-chip sequencing", "sequencer_cycles_per_token", "{:,.0f}"),
    ("  read-back to host", "host_io_cycles_per_token", "{:,.0f}"),
    ("kernels per token", "kernels_per_token", "{:.0f}"),
    ("tokens/s at clock", "tokens_per_s_simulated", "{:,.0f}"),
    ("HBM bytes per token", "hbm_bytes_per_token", "{:,.0f}"),
    ("DDR bytes per token", "ddr_bytes_per_token", "{:,.0f}"),
    ("HBM bandwidth used", "hbm_bandwidth_fraction", "{:.1%}"),
    ("  during kernels", "hbm_bandwidth_fraction_in_kernels", "{:.1%}"),
    ("roofline cycles/token", "roofline_cycles_per_token", "{:,.0f}"),
    ("time to first token", "prompt_cycles", "{:,.0f}"),
    ("steps", "steps", "{}"),
    ("wall-clock", "wall_s", "{:.1f} s"),
]


def print_report(results, compiled, text, prompt_ids):
    shown = "fused" if "fused" in results else next(iter(results))
    first = results[shown]
    r0 = first["report"]
    t = next(iter(compiled.values())).target
    print(f"prompt: {len(prompt_ids)} tokens; generated {len(first['tokens'])}")
    if text is not None:
        print("-" * 60)
        print(text)
        print("-" * 60)
    else:
        print(f"tokens: {first['tokens']}")
    print(f"backend: {'Verilator co-simulation of the RTL' if r0['backend'] == 'rtl' else 'fast model'}; "
          f"target {t.describe()}; clock {t.clock_hz / 1e9:g} GHz; host launch {t.host_launch_cycles} cycles")
    print(f"weights: {next(iter(compiled.values())).weights}")
    modes = list(results)
    print(f"{'':<24}" + "".join(f"{m:>14}" for m in modes) + "  source")
    where = r0["provenance"]
    for label, key, fmt in ROWS:
        print(f"{label:<24}" + "".join(f"{fmt.format(results[m]['report'][key]):>14}" for m in modes)
              + (f"  {where[key]}" if key in where else ""))
    cycles = {m: results[m]["report"]["cycles_per_token"] for m in modes}
    kernel = {m: results[m]["report"]["kernel_cycles_per_token"] for m in modes}
    if "fused" in modes and "unfused" in modes:
        print(f"fused is {cycles['unfused'] / cycles['fused']:.2f}x faster per token than op-by-op "
              f"({kernel['unfused'] / kernel['fused']:.2f}x in kernel cycles alone; the rest is launches at the "
              f"assumed {t.host_launch_cycles} cycles and Program Load)")
    if "fused" in modes and "fused_chip" in modes:
        print(f"chip orchestration is {cycles['fused'] / cycles['fused_chip']:.2f}x faster per token than host "
              f"orchestration (kernel cycles {kernel['fused']:,.0f} and {kernel['fused_chip']:,.0f})")
    notes = {c.loop_note for c in compiled.values() if c.mode == "looped" and c.loop_note}
    if "looped" in modes and "fused" in modes and not notes:
        print(f"kernel looping is {cycles['fused'] / cycles['looped']:.2f}x faster per token than fused "
              f"host-orchestrated kernels" + (f" ({cycles['unfused'] / cycles['looped']:.2f}x over op-by-op)"
                                               if "unfused" in modes else ""))
    for note in sorted(notes):
        print(f"looped: {note}")
    for m in modes:
        pre = results[m]["report"].get("prefill")
        if pre:
            print(f"{m}: prefill of {pre['positions']} prompt positions in {pre['chunks']} chunk(s), "
                  f"{pre['kernels']} kernels: {pre['cycles']:,.0f} cycles ({pre['kernel_cycles']:,.0f} in kernels, "
                  f"{pre['launch_cycles']:,.0f} launching, {pre['program_load_cycles']:,.0f} Program Load); "
                  f"time to first token {results[m]['report']['prompt_cycles']:,.0f} cycles")
    prefill_notes = {c.prefill_note for c in compiled.values() if c.prefill_note}
    for note in sorted(prefill_notes):
        print(f"prefill: {note}")
    if len(modes) > 1:
        same = all(results[m]["tokens"] == first["tokens"] for m in modes)
        print(f"same tokens in every mode: {same}")
    print("source: measured = the RTL's counters; modelled = the fast model's estimate of them; assumed = a "
          "target parameter (the host's round trip, the host link); derived = computed from the others")
    load = r0["load"]
    print(f"load ({shown}): {load['image_bytes']:,} bytes of weights, tables and programs "
          f"({load['host_link_cycles']:,.0f} cycles over the host link"
          + (f"; {load['ddr_to_hbm_bytes']:,} staged DDR->HBM in {load['ddr_to_hbm_cycles']:,.0f} cycles"
             if load["weights_tier"] == "ddr" else "") + ")")


def _encode(tokenizer, prompt):
    try:
        return tokenizer(prompt).input_ids if prompt else []
    # A tokenizer that loaded can still fail on a prompt (tokenizers raises plain Exception).
    except Exception as error:  # noqa: BLE001
        raise DecodeError(f"the tokenizer cannot encode the prompt ({' '.join(str(error).split())[:200]})") from None


def main(args):
    """Run ``openrdu decode``; raises :class:`sw.errors.OpenRDUError` for what the user can fix."""
    if args.compare:
        modes = dict(MODES)
    else:
        program = program_mode(args)
        modes = {mode_name(program, args.orchestration): (program, args.orchestration)}
    programs = sorted({program for program, _ in modes.values()})
    target = load_target(args.target)
    check_folder(args.checkpoint)
    backends.get(args.backend).check_target(target)
    tokenizer = None
    if args.prompt is not None:
        tokenizer = load_tokenizer(args.checkpoint)
        if tokenizer is None:
            raise DecodeError(f"{args.checkpoint} has no tokenizer.json; give --prompt-ids instead of --prompt")
    prompt_ids = args.prompt_ids if args.prompt_ids is not None else _encode(tokenizer, args.prompt)
    compiled, paths = {}, {}
    for program in programs:
        compiled[program], paths[program] = cached_compile(args.checkpoint, target, program, args.context,
                                                           args.weights_dtype, args.prefill)
    check_request(compiled[programs[0]], prompt_ids, args.max_new_tokens, temperature=args.temperature,
                  top_k=args.top_k)
    if args.compare and compiled["looped"].loop_note:
        # Its kernels are the fused ones, chip-orchestrated: the fused_chip column already.
        modes.pop("looped")
    request = {"prompt_ids": prompt_ids, "max_new_tokens": args.max_new_tokens,
               "temperature": args.temperature, "top_k": args.top_k, "seed": args.seed,
               "weights_tier": args.weights_tier}
    if args.prefill:
        request["prefill"] = True
    if args.trace:
        request["trace"] = True
    results = run(modes, compiled, paths, request, args.backend, progress_mode(args))
    if args.trace:
        runs = {f"{mode} on {args.backend}": results[mode].pop("trace") for mode in modes}
        try:
            Path(args.trace).write_text(json.dumps(chrome_trace(runs, target.clock_hz)))
        except OSError as error:
            raise DecodeError(f"--trace {args.trace}: cannot write the trace ({error.strerror})") from None
    # With --compare the text and the top-level tokens are the fused program's, the default mode's.
    first = results["fused" if "fused" in results else next(iter(modes))]
    text = tokenizer.decode(first["prompt_ids"] + first["tokens"], skip_special_tokens=True) if tokenizer else None
    if args.json:
        out = {"text": text, "prompt_ids": first["prompt_ids"], "tokens": first["tokens"],
               "backend": args.backend, "target": target.name, "weights": compiled[programs[0]].weights}
        out.update({mode: {k: v for k, v in results[mode].items() if k not in ("prompt_ids",)} for mode in modes})
        print(json.dumps(out, indent=2))
    else:
        print_report(results, compiled, None if text is None else escape(text), prompt_ids)
    return 0
