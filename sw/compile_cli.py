"""``openrdu compile``: compile a checkpoint for a target and print what it became."""

import hashlib
import json
from pathlib import Path

from sw.compiler.checkpoint import CheckpointError, UnsupportedModelError
from sw.compiler.compile import compile_model
from sw.compiler.mapping import CompileError, load, save
from sw.target import TARGETS

ERRORS = (CheckpointError, UnsupportedModelError, CompileError)
CACHE = Path("build/compiled")


def add_arguments(parser):
    parser.add_argument("--target", choices=sorted(TARGETS), default="chip",
                        help="chip to compile for (default: chip, the co-simulated 2x4 array)")
    parser.add_argument("--unfused", action="store_true", help="one kernel per op: the op-by-op baseline")
    parser.add_argument("--context", type=int, default=None,
                        help="KV-cache positions (default: the most the model and the target's PMUs allow)")


def cached_compile(checkpoint, target, mode, context):
    """Compile, or reuse the compiled model for the same checkpoint files, target, mode and context."""
    path = Path(checkpoint)
    digest = hashlib.sha256(repr((target, mode, context)).encode())
    for file in sorted(path.glob("*")) if path.is_dir() else []:
        if file.is_file():
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
    # Everything that shapes a compiled model: the compiler, the kernel API and the RTL layouts it packs.
    repo = Path(__file__).resolve().parent.parent
    for source in sorted(list(repo.glob("sw/**/*.py")) + list(repo.glob("hw/**/*.py"))):
        digest.update(source.read_bytes())
    cached = CACHE / f"{digest.hexdigest()[:20]}.pkl"
    if cached.is_file():
        try:
            return load(cached), cached
        except (CompileError, EOFError, OSError, AttributeError, ImportError):
            pass
    compiled = compile_model(checkpoint, target, mode=mode, context=context)
    try:
        CACHE.mkdir(parents=True, exist_ok=True)
        save(compiled, cached)
    except OSError as e:
        raise CompileError(f"cannot write the compiled model to {cached}: {e.strerror}") from None
    return compiled, cached


def main(args):
    target = TARGETS[args.target]
    try:
        compiled = compile_model(args.checkpoint, target, mode="unfused" if args.unfused else "fused",
                                 context=args.context)
        save(compiled, args.output)
    except ERRORS as e:
        raise SystemExit(f"openrdu compile: error: {e}")
    except OSError as e:
        raise SystemExit(f"openrdu compile: error: cannot write {args.output}: {e.strerror}")
    print(compiled.summary())
    if args.memory_map:
        print("\nmemory map:")
        print(compiled.memory_map.table())
    print(f"\nwrote {args.output}")
    if args.json:
        from sw.compiler.estimate import estimate_step

        try:
            Path(args.json).write_text(json.dumps(estimate_step(compiled, compiled.context), indent=2))
        except OSError as e:
            raise SystemExit(f"openrdu compile: error: cannot write {args.json}: {e.strerror}")
    return 0
