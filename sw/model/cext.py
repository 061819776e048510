"""The fast model's compiled helpers: C sources next to this file, built on first use with the system C compiler.

Two helpers use it: the credit service's loop (``credit.c``, loaded with ctypes, :mod:`sw.model.credit`) and the
fp32 kernels (``fastfp.c``, a CPython extension module, :mod:`sw.model.fp32`). Each is built with ``$CC`` (else
``cc`` or ``gcc`` from PATH) into ``$OPENRDU_BUILD_DIR/model`` (default ``build/model`` in a checkout, the user's
cache folder ``$XDG_CACHE_HOME/openrdu/model`` or ``~/.cache/openrdu/model`` for an installed package), named by a
hash of the source, the compiler command and the platform (and the Python ABI for an extension module), and
written to a temporary file first, then renamed: parallel test workers build it at most once each and never load a
partial file. A helper that cannot be built or loaded is reported once per process on stderr by its caller, which
then runs its Python form; ``OPENRDU_NO_CEXT=1`` forces the Python forms.

The flags keep C's floating point IEEE binary32 with round-to-nearest-even, in the source's order:
``-ffp-contract=off`` (no fused multiply-add), no ``-ffast-math``, ``-fno-unsafe-math-optimizations``.
"""

import hashlib
import importlib.machinery
import importlib.util
import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FLAGS = ["-O2", "-shared", "-fPIC", "-ffp-contract=off", "-fno-fast-math", "-fno-unsafe-math-optimizations"]


def disabled():
    """Whether ``OPENRDU_NO_CEXT`` asks for the Python forms."""
    return os.environ.get("OPENRDU_NO_CEXT", "") not in ("", "0")


def build_dir(repo=REPO):
    """The folder compiled helpers are cached in (the simulator builds' OPENRDU_BUILD_DIR, if set); ``repo`` is the
    folder that holds ``pyproject.toml`` in a checkout."""
    root = os.environ.get("OPENRDU_BUILD_DIR")
    if root:
        return Path(root).resolve() / "model"
    if (Path(repo) / "pyproject.toml").is_file():
        return Path(repo) / "build" / "model"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).resolve() / "openrdu" / "model"


def compiler():
    """The C compiler command as a list (``$CC``, else ``cc`` or ``gcc`` from PATH), or None."""
    cc = os.environ.get("CC")
    if cc:
        return shlex.split(cc)
    found = shutil.which("cc") or shutil.which("gcc")
    return [found] if found else None


def build(source, *, cc, folder, flags=FLAGS, again=False, extension=False):
    """Path of ``source`` compiled into a shared library in ``folder``, built unless cached (or ``again``).

    Parameters
    ----------
    source : Path
        The C file; the library is ``<stem>-<hash>.so``.
    cc : list of str or None
        The compiler command (:func:`compiler`).
    folder : Path
        The cache folder (:func:`build_dir`).
    flags : list of str
    again : bool
        Build even when a cached library exists (one that did not load).
    extension : bool
        A CPython extension module: compiled against this Python's headers, its ABI in the hash.

    Raises OSError, ValueError (a ``$CC`` that does not parse, from the caller's :func:`compiler`) or subprocess
    errors on failure.
    """
    if cc is None:
        raise OSError("no C compiler found ($CC, cc or gcc)")
    source = Path(source)
    flags = list(flags)
    if extension:
        include = sysconfig.get_paths()["include"]
        if not (Path(include) / "Python.h").is_file():
            raise OSError(f"no Python.h in {include} (the Python development headers)")
        flags += ["-I" + include]
    text = source.read_bytes()
    platform_key = [sys.platform, platform.machine()]
    if extension:
        platform_key += [sysconfig.get_config_var("EXT_SUFFIX") or "", sys.version]
    # A build folder shared between machines keeps one library per architecture (and Python, for a module).
    key = hashlib.sha256(text + b"\0" + "\0".join(cc + flags + platform_key).encode()).hexdigest()[:16]
    target = Path(folder) / f"{source.stem}-{key}.so"
    if target.exists() and not again:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{source.stem}-{key}-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run(cc + flags + ["-o", tmp, str(source)], capture_output=True, text=True, timeout=300)
        if done.returncode:
            last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            raise OSError(f"{shlex.join(cc)} failed: {last}")
        # mkstemp made the file private (0600); a shared build folder needs it readable by every user.
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o755 & ~mask)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load_module(name, path):
    """Import the CPython extension module ``name`` (its ``PyInit_<name>``) from ``path``. Raises ImportError."""
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, str(path), loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def extension(name, source):
    """The extension module ``name`` built from ``source`` (cached) and imported; a cached file that does not load is
    built once more. Raises OSError, ImportError, ValueError or subprocess errors (the caller falls back)."""
    cc, folder = compiler(), build_dir()
    try:
        return load_module(name, build(source, cc=cc, folder=folder, extension=True))
    except ImportError:
        return load_module(name, build(source, cc=cc, folder=folder, extension=True, again=True))
