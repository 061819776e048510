"""Launch plans kept on disk: a process replays the flat sequence an earlier process made for a launch.

A launch plan (:meth:`sw.model.chip.ChipModel._plan`) depends on the program, the patterns' shapes and the
parameters, not on the data, so the fast model makes each once; but a process made it only for itself, and a
fresh process (every ``openrdu decode``, each of a bench's runs) paid for every context bucket's plans again,
about half of its first decode (docs/performance.md). Here the part a replay runs, the plan's flat
sequence for ``fastfp.seq_run`` with its cycles and counters, is written once per launch shape and read back by
later processes, as Verilator's builds are (the cycle estimate is the one the plan was made with: it is
data-independent).

An entry's name is the SHA-256 of everything its sequence follows from: this file format, the fast model's
sources (every ``.py`` and ``.c`` under ``hw/``, ``sw/`` and ``facts/``) with Python's and numpy's versions, the
compiled kernels' library, the memory and array parameters, the AGCUs, the program's fingerprint (its content
less its names, :func:`sw.model.chip._fingerprint`), the launch's shapes and the tiers' sizes. A change to any of
them names another entry. Every launch whose plan has a flat sequence is kept, gated ones included, except a
looped kernel's later iterations (reads already held from the one before).

The folder is ``$OPENRDU_PLAN_CACHE``, else ``plans`` in the compiled helpers' folder
(:func:`sw.model.cext.build_dir`: ``build/model`` in a checkout); ``OPENRDU_PLAN_CACHE=off`` (or ``0``, ``no``,
``false``) turns it off, as the test suite does (tests/conftest.py) so that no test depends on what an earlier run
left. An entry is written to a temporary file and renamed, so parallel processes never read a partial one. An entry
is checked before it is used: its SHA-256 over the rest of the file and its shape (and, by the fast model, its fit
to the launch); one that fails is reported in one line on stderr, removed and made again. A folder that cannot be
written is reported once per process and the cache is not written to. The folder is pruned to :data:`LIMIT_BYTES`,
looked at on a process's first store and then once every :data:`PRUNE_EVERY_BYTES` it stores (each process may take
it that much over). A plan is written when its flat sequence is first built, at its first replay: one a process
makes and never replays is not kept.
"""

import hashlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sw.model import cext

MAGIC = b"OpenRDU-plan-2\n"
# Bytes the folder holds at most: past it, a store that looks at its size (PRUNE_EVERY_BYTES) removes the entries
# used least recently until it holds three quarters of it (the default model's plans take about 1.4 MB on chip and
# 3 MB on 4x8; a sweep adds its points').
LIMIT_BYTES = 256 << 20
_DIGEST = hashlib.sha256().digest_size
_ROOTS = ("facts", "hw", "sw")
# The sources' digest, found once per process; the folders a write failed in (warned once).
_SOURCES = None
_WARNED = set()
# Read once, at import: os.umask can only be read by setting it.
_UMASK = os.umask(0)
os.umask(_UMASK)
# A temporary file older than this (seconds) was left by a process that died writing it.
_STALE_S = 3600
# Bytes a process stores between two looks at the folder's size (_prune stats every entry): its first store looks,
# then one once this much more is written, so the folder exceeds LIMIT_BYTES by at most this much per process.
PRUNE_EVERY_BYTES = LIMIT_BYTES // 64
# Folder -> bytes this process stored there since it last pruned it.
_UNPRUNED = {}


def folder():
    """The cache folder, or None where the cache is off."""
    chosen = os.environ.get("OPENRDU_PLAN_CACHE", "")
    if chosen.strip().lower() in ("off", "0", "no", "false"):
        return None
    return Path(chosen).resolve() if chosen else cext.build_dir() / "plans"


def sources_digest():
    """SHA-256 (hex) of the fast model's sources: every .py and .c file under facts/, hw/ and sw/ by path and
    content, with the Python and numpy versions and the platform; found once per process."""
    global _SOURCES
    if _SOURCES is None:
        digest = hashlib.sha256()
        base = cext.HERE.parents[1]
        for root in _ROOTS:
            for path in sorted((base / root).rglob("*")):
                if path.suffix in (".py", ".c") and path.is_file():
                    digest.update(str(path.relative_to(base)).encode() + b"\0")
                    digest.update(hashlib.sha256(path.read_bytes()).digest())
        digest.update(f"{sys.version}\0{np.__version__}\0{platform.machine()}".encode())
        _SOURCES = digest.hexdigest()
    return _SOURCES


def entry_name(parts):
    """The entry's name for ``parts`` (a tuple whose ``repr`` shows everything the sequence follows from)."""
    text = repr((MAGIC, sources_digest(), parts))
    return hashlib.sha256(text.encode()).hexdigest()


def _warn(key, line):
    """Print ``line`` on stderr, once per process for ``key``."""
    if key not in _WARNED:
        _WARNED.add(key)
        print(f"openrdu: {line}", file=sys.stderr)


def load(name):
    """The entry ``name`` as ``(meta, arrays)``, or None where there is none or the cache is off; an entry that
    fails its checks is reported, removed and None returned."""
    where = folder()
    if where is None:
        return None
    path = where / f"{name}.plan"
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        found = _parse(data)
    except Exception as error:  # noqa: BLE001 - whatever a damaged entry raises, it is made again
        print(f"openrdu: the launch-plan cache entry {path} is unusable ({type(error).__name__}: {error}); making "
              "the plan again", file=sys.stderr)
        try:
            path.unlink()
        except OSError:
            pass
        return None
    try:
        # Its time is when it was last used, for _prune.
        os.utime(path)
    except OSError:
        pass
    return found


def _parse(data):
    """``(meta, arrays)`` of an entry's bytes ``data``; raises on any departure from the format. The arrays are
    copies (aligned for the compiled sequence's 64-bit reads) and read-only."""
    head = len(MAGIC) + _DIGEST
    if len(data) < head + 8 or not data.startswith(MAGIC):
        raise ValueError("not a plan file of this format")
    body = memoryview(data)[head:]
    if hashlib.sha256(body).digest() != data[len(MAGIC):head]:
        raise ValueError("its checksum does not match its content")
    size = int.from_bytes(body[:8], "little")
    meta = json.loads(bytes(body[8:8 + size]))
    if not isinstance(meta, dict) or not isinstance(meta.get("arrays"), list):
        raise ValueError("no array table")
    blob, arrays = body[8 + size:], []
    for dtype, shape, offset in meta["arrays"]:
        dtype = np.dtype(dtype)
        if dtype.kind not in "iub" or not isinstance(shape, list) or len(shape) > 8 or \
                not all(type(k) is int and 0 <= k < 1 << 40 for k in shape) or type(offset) is not int:
            raise ValueError(f"an array of {dtype} {shape}")
        end = offset + math.prod(shape) * dtype.itemsize
        if not 0 <= offset <= end <= len(blob):
            raise ValueError("an array outside the file")
        array = np.frombuffer(blob[offset:end], dtype).reshape(shape).copy()
        array.flags.writeable = False
        arrays.append(array)
    return meta, arrays


def store(name, meta, arrays):
    """Write the entry ``name``: ``meta`` (JSON) and ``arrays`` (integer or bool numpy arrays, referred to by their
    index in ``meta``). Nothing where the cache is off; a folder that cannot be written is reported once."""
    where = folder()
    if where is None:
        return
    table, blobs, at = [], [], 0
    for array in arrays:
        array = np.ascontiguousarray(array)
        table.append((array.dtype.str, list(array.shape), at))
        blobs.append(array.tobytes())
        at += len(blobs[-1])
    text = json.dumps({**meta, "arrays": table}).encode()
    body = len(text).to_bytes(8, "little") + text + b"".join(blobs)
    data = MAGIC + hashlib.sha256(body).digest() + body
    try:
        where.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name[:16]}-", suffix=".plan", dir=where)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            # mkstemp made the file private (0600); a shared build folder needs it readable by every user.
            os.chmod(tmp, 0o644 & ~_UMASK)
            os.replace(tmp, where / f"{name}.plan")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as error:
        _warn(str(where), f"cannot write the launch-plan cache in {where} ({error.strerror or error}); plans are "
                          "made in each process")
        return
    written = _UNPRUNED.get(where)
    if written is not None and written + len(data) < PRUNE_EVERY_BYTES:
        _UNPRUNED[where] = written + len(data)
        return
    _UNPRUNED[where] = 0
    try:
        _prune(where)
    except OSError:
        pass


def _prune(where, limit=None, now=None):
    """Remove the entries of ``where`` used least recently (:func:`load` touches what it reads) while it holds more
    than ``limit`` bytes (default :data:`LIMIT_BYTES`), down to three quarters of it, and temporary files older
    than an hour."""
    limit = LIMIT_BYTES if limit is None else limit
    now = time.time() if now is None else now
    entries = []
    with os.scandir(where) as found:
        for entry in found:
            if not entry.name.endswith(".plan"):
                continue
            try:
                info = entry.stat()
                if entry.name.startswith("."):
                    if info.st_mtime < now - _STALE_S:
                        os.unlink(entry.path)
                    continue
            except OSError:
                continue
            entries.append((info.st_mtime, info.st_size, entry.path))
    total = sum(size for _, size, _ in entries)
    if total <= limit:
        return
    for _, size, path in sorted(entries):
        try:
            os.unlink(path)
        except OSError:
            continue
        total -= size
        if total <= limit * 3 // 4:
            break


def discard(name):
    """Remove the entry ``name``, one that loaded but does not fit its launch."""
    where = folder()
    if where is not None:
        try:
            (where / f"{name}.plan").unlink()
        except OSError:
            pass


if folder() is not None:
    # Taken when the fast model is imported, so that sources edited during a long run are not stored under names of
    # the new ones; where a source cannot be read now, the first plan looked up tries again.
    try:
        sources_digest()
    except (OSError, RuntimeError):
        pass
