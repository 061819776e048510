"""``openrdu compile``: compile a checkpoint for a target and print what it became."""

import hashlib
import json
import os
import stat
import sys
from pathlib import Path

from sw.compiler.checkpoint import MAX_JSON_BYTES, check_file, check_folder, weight_files
from sw.compiler.compile import WEIGHTS_DTYPES, compile_model
from sw.compiler.program import dumps, load
from sw.errors import CompileError, OpenRDUError, ProgramFormatError
from sw.target import TARGETS, load_target

CACHE = Path("build/compiled")
REPO = Path(__file__).resolve().parent.parent
CHUNK = 1 << 20                         # bytes hashed at a time: a 1 GB weight file never sits in memory


def add_arguments(parser):
    parser.add_argument("--target", default="chip", metavar="NAME|FILE",
                        help=f"chip to compile for: {', '.join(sorted(TARGETS))} (default: chip, the co-simulated "
                             f"2x4 array), or a .toml/.json target file (see docs/targets.md)")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--unfused", action="store_true", help="one kernel per op: the op-by-op baseline")
    kind.add_argument("--looped", action="store_true",
                      help="fused, with the decoder layers one kernel looped over the layers (kernel looping; "
                           "fused instead, with a note, where a layer does not fit one kernel)")
    parser.add_argument("--context", type=int, default=None,
                        help="KV-cache positions (default: the longest whose K fits one PMU; longer contexts run "
                             "with K in chunks, up to the target's limit)")
    parser.add_argument("--weights-dtype", choices=WEIGHTS_DTYPES, default="auto",
                        help="how weights stream from HBM: auto (default) bf16 when every value of the matrices is a "
                             "bf16 value, else fp32 words; bf16 rounds fp16/fp32 weights to bf16 (half the bytes); "
                             "fp32 streams fp32 words even for bf16 weights")
    parser.add_argument("--prefill", action="store_true",
                        help="also compile the prompt's prefill kernels (GEMMs over blocks of positions); decode "
                             "then runs the prompt before its last token as prefill chunks instead of a step per token")


def _hash_file(digest, path, what, limit):
    """Add ``path``'s name, size and content to ``digest``, read in chunks (a regular file only)."""
    size = check_file(path, limit, what)
    digest.update(f"{path.name}\0{size}\0".encode())
    try:
        # Non-blocking, and checked again once open: a FIFO swapped in after the check must not hang us.
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise CompileError(f"{path}: not a regular file ({what})")
            while chunk := f.read(CHUNK):
                digest.update(chunk)
    except OSError as e:
        raise CompileError(f"{path}: cannot read the {what} ({e.strerror})") from None


def cache_key(checkpoint, target, mode, context, weights_dtype="auto", prefill=False):
    """A digest of everything that shapes a compiled model.

    The checkpoint files the reader uses (config.json, the safetensors index if any and the weight
    files: names, sizes, streamed SHA-256; nothing else in the folder is read), the target, mode and
    context, weights policy and prefill, and the sources of the compiler, the kernel API and the RTL layouts it
    packs.
    """
    path = check_folder(checkpoint)
    digest = hashlib.sha256(repr((target, mode, context, weights_dtype) + ((True,) if prefill else ())).encode())
    _hash_file(digest, path / "config.json", "config.json", MAX_JSON_BYTES)
    index = path / "model.safetensors.index.json"
    if os.path.lexists(index):
        _hash_file(digest, index, "safetensors index", MAX_JSON_BYTES)
    for file in weight_files(path)[0]:
        _hash_file(digest, file, "weight file", float("inf"))
    for source in sorted(file for folder in ("facts", "hw", "sw") for file in REPO.glob(f"{folder}/**/*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()


def _write(path, data):
    """Write ``data`` to ``path`` through a temporary file beside it, so no reader sees half a file."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise CompileError(f"cannot write {path}: {e.strerror}") from None


def cached_compile(checkpoint, target, mode, context, weights_dtype="auto", prefill=False):
    """Compile, or reuse the compiled model for the same checkpoint files, target, mode, context,
    weights policy and prefill.

    A cache entry that does not load (corrupt, truncated, another format version) is reported in one
    line on stderr and compiled again. Returns ``(compiled, path of the cache entry)``.
    """
    try:
        cached = CACHE / f"{cache_key(checkpoint, target, mode, context, weights_dtype, prefill)[:20]}.rdu"
    except OpenRDUError:
        # A checkpoint the reader refuses: let it say why in its own words (it raises), else say why here.
        compile_model(checkpoint, target, mode=mode, context=context, weights_dtype=weights_dtype, prefill=prefill)
        raise
    if cached.exists():
        try:
            return load(cached), cached
        except ProgramFormatError as e:
            print(f"openrdu: the compile cache entry is unusable, compiling again: {e}", file=sys.stderr)
    compiled = compile_model(checkpoint, target, mode=mode, context=context, weights_dtype=weights_dtype,
                             prefill=prefill)
    try:
        CACHE.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CompileError(f"cannot write the compiled model to {CACHE}: {e.strerror}") from None
    _write(cached, dumps(compiled))
    return compiled, cached


def program_mode(args):
    """The compile mode the arguments ask for: ``unfused``, ``looped`` or ``fused``."""
    return "unfused" if args.unfused else "looped" if getattr(args, "looped", False) else "fused"


def check_output(path):
    """CompileError unless ``path`` can be written: its folder exists and is writable, and it is no folder."""
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise CompileError(f"cannot write {path}: no folder {folder}")
    if path.is_dir():
        raise CompileError(f"cannot write {path}: it is a folder")
    if not os.access(folder, os.W_OK | os.X_OK) or path.exists() and not os.access(path, os.W_OK):
        raise CompileError(f"cannot write {path}: permission denied")


def main(args):
    try:
        target = load_target(args.target)
        for path in [args.output] + ([args.json] if args.json else []):
            check_output(path)
        trace = print if getattr(args, "ir", False) else None
        compiled = compile_model(args.checkpoint, target, mode=program_mode(args),
                                 context=args.context, trace=trace,
                                 weights_dtype=getattr(args, "weights_dtype", "auto"),
                                 prefill=getattr(args, "prefill", False))
        _write(args.output, dumps(compiled))
        print(compiled.summary())
        if args.memory_map:
            print("\nmemory map:")
            print(compiled.memory_map.table())
        print(f"\nwrote {args.output}")
        if args.json:
            from sw.compiler.estimate import estimate_step

            _write(args.json, json.dumps(estimate_step(compiled, compiled.context), indent=2).encode())
    except OpenRDUError as e:
        from cli.decode import escape  # here: cli.decode imports this module

        raise SystemExit(f"openrdu compile: error: {escape(str(e), keep='')}") from None
    return 0
