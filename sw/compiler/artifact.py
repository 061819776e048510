"""A safe, versioned, checksummed file of Python objects: a zip of JSON and .npy members.

A file is a plain zip archive (``unzip -l``, ``python -m zipfile -l``) of
stored (uncompressed) members:

- ``manifest.json``: ``format``, ``version``, and the SHA-256 and size of
  every payload member;
- ``objects.json``: the object tree (see below);
- ``arrays/N.npy``: the tree's numpy arrays (numeric dtypes only; object arrays are refused).

The archive comment, the file's last bytes, is ``<format> sha256=<hex>``: the
SHA-256 of every byte before it, so any change to the file (a flipped bit, a
truncation, an edited manifest) is refused before anything is parsed.

The tree is JSON with tagged nodes: ``{"$tuple": [...]}``, ``{"$dict":
[[key, value], ...]}`` (any key type, order kept), ``{"$array": N}``,
``{"$enum": "module.Class", "name": ...}``, ``{"$obj": "module.Class",
"state": {...}}``, ``{"$fraction": [n, d]}``, ``{"$float": "inf"}``,
``{"$scalar": dtype, "value": ...}``; a list, dict or object met more than
once is written once with an ``"$id"`` and referred to as ``{"$ref": id}``,
so shared objects stay shared. Only the classes the caller lists are
created, by setting their fields (no constructor, no code from the file).

Each created object's fields are checked against the class's type annotations
(``typing.get_type_hints``; a dataclass's fields, or a plain class's
class-level annotations), through ``list[X]``, ``dict[K, V]``, ``tuple[...]``,
``X | None`` and ``np.ndarray``/``NDArray[dtype]``, so a file with a valid
checksum but a field of the wrong type is refused at load (naming the field's
path), not met later as an AttributeError. ``object`` and ``Any`` are
unchecked; an ``int`` is accepted where a ``float`` is annotated (as typing
does), a ``bool`` never where an ``int`` is; a field holding an allowed class
is checked by ``isinstance`` (its own fields are checked when it is created).
"""

import enum
import hashlib
import io
import json
import math
import re
import types
import typing
import zipfile
from dataclasses import fields, is_dataclass
from fractions import Fraction

import numpy as np

from sw.errors import ProgramFormatError

MANIFEST, OBJECTS = "manifest.json", "objects.json"
_TRAILER = re.compile(rb"([a-z0-9-]+) sha256=([0-9a-f]{64})")
_SCALAR = re.compile(r"[<>|=]?[biuf][1248]")


def _name(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def _memoised(obj):
    return isinstance(obj, (list, dict, np.ndarray)) or hasattr(obj, "__dict__") and not isinstance(obj, enum.Enum)


class _Encoder:
    def __init__(self, classes):
        self.classes = {_name(c): c for c in classes}
        self.arrays, self.ids, self.shared = [], {}, set()

    def count(self, root):
        """Find the objects reached more than once (their first node gets an ``$id``)."""
        seen, stack = set(), [root]
        while stack:
            obj = stack.pop()
            if _memoised(obj):
                if id(obj) in seen:
                    self.shared.add(id(obj))
                    continue
                seen.add(id(obj))
            if isinstance(obj, (list, tuple)):
                stack.extend(obj)
            elif isinstance(obj, dict):
                stack.extend(obj.keys())
                stack.extend(obj.values())
            elif _memoised(obj) and not isinstance(obj, np.ndarray):
                stack.extend(vars(obj).values())

    def __call__(self, obj):
        if isinstance(obj, enum.Enum):         # first: a str or int enum must come back as itself
            return {"$enum": self._class(obj), "name": obj.name}
        if obj is None or type(obj) in (bool, str, int):
            return obj
        if type(obj) is float:
            return obj if math.isfinite(obj) else {"$float": repr(obj)}
        if isinstance(obj, tuple) and type(obj) is tuple:
            return {"$tuple": [self(v) for v in obj]}
        if type(obj) is Fraction:
            return {"$fraction": [obj.numerator, obj.denominator]}
        if isinstance(obj, np.generic):
            return {"$scalar": obj.dtype.str, "value": obj.item()}
        if id(obj) in self.ids:
            return {"$ref": self.ids[id(obj)]}
        if type(obj) is list:
            node = {"$list": None}
        elif type(obj) is dict:
            node = {"$dict": None}
        elif type(obj) is np.ndarray:
            if obj.dtype.hasobject:
                raise TypeError("an array of Python objects cannot be stored")
            self.arrays.append(obj)
            node = {"$array": len(self.arrays) - 1}
        elif hasattr(obj, "__dict__"):
            node = {"$obj": self._class(obj), "state": None}
        else:
            raise TypeError(f"a {type(obj).__name__} cannot be stored")
        if id(obj) in self.shared:
            self.ids[id(obj)] = node["$id"] = len(self.ids)
        if "$list" in node:
            node["$list"] = [self(v) for v in obj]
        elif "$dict" in node:
            node["$dict"] = [[self(k), self(v)] for k, v in obj.items()]
        elif "$obj" in node:
            node["state"] = {k: self(v) for k, v in vars(obj).items()}
        return node if "$id" in node or not ("$list" in node) else node["$list"]

    def _class(self, obj):
        name = _name(type(obj))
        if self.classes.get(name) is not type(obj):
            raise TypeError(f"{name} is not one of the classes this file may hold")
        return name


class FieldTypeError(ValueError):
    """A decoded field whose value does not match its annotation; ``path`` locates it (``.f``, ``[k]``)."""

    def __init__(self, problem, path=()):
        super().__init__(problem)
        self.problem, self.path = problem, list(path)

    def within(self, segment):
        self.path.insert(0, segment)
        return self


def _describe(hint):
    if hint is None or hint is type(None):
        return "None"
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " | ".join(_describe(a) for a in typing.get_args(hint))
    origin = typing.get_origin(hint) or hint
    return getattr(origin, "__name__", str(origin))


_EXACT = frozenset({int, str, bool, float})     # a value of exactly this type matches the annotation


def check_type(value, hint):
    """Raise FieldTypeError unless ``value`` matches the annotation ``hint`` (see the module's notes)."""
    if hint is object or hint is typing.Any or type(value) is hint and hint in _EXACT:
        return
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return check_type(value, arg)
            except FieldTypeError:
                pass
        raise FieldTypeError(f"expected {_describe(hint)}, got {_describe(type(value))}")
    if hint is None or hint is type(None):
        ok = value is None
    elif hint is bool:
        ok = type(value) is bool
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (float, int)) and not isinstance(value, bool)
    elif origin is None:
        ok = isinstance(value, hint) if isinstance(hint, type) else True
    elif origin is np.ndarray:
        dtype = args[1] if len(args) == 2 else typing.Any
        want = typing.get_args(dtype)[0] if typing.get_origin(dtype) is np.dtype else typing.Any
        ok = type(value) is np.ndarray and (want is typing.Any or not isinstance(want, type)
                                            or np.issubdtype(value.dtype, want))
        if type(value) is np.ndarray and not ok:
            raise FieldTypeError(f"expected an array of {want.__name__}, got one of {value.dtype}")
    else:
        ok = isinstance(value, origin) if isinstance(origin, type) else True
    if not ok:
        raise FieldTypeError(f"expected {_describe(hint)}, got {_describe(type(value))}")
    if origin is tuple:                         # tuple[X, ...], tuple[X, Y], or tuple[()] (args () or ((),))
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        elif args == ((),):
            args = ()
        if len(value) != len(args):
            raise FieldTypeError(f"expected a tuple of {len(args)} items, got {len(value)}")
        if args and args[0] in _EXACT and all(type(item) is args[0] for item in value) and len(set(args)) == 1:
            return                              # the common tuple[int, ...]: no call per item
        for i, (item, arg) in enumerate(zip(value, args)):
            try:
                check_type(item, arg)
            except FieldTypeError as e:
                raise e.within(f"[{i}]") from None
    elif origin is list and args and not (args[0] in _EXACT and all(type(item) is args[0] for item in value)):
        for i, item in enumerate(value):
            try:
                check_type(item, args[0])
            except FieldTypeError as e:
                raise e.within(f"[{i}]") from None
    elif origin is dict and len(args) == 2:
        for key, item in value.items():
            try:
                check_type(key, args[0])
            except FieldTypeError as e:
                raise FieldTypeError(f"key: {e.problem}", [f"[{key!r}]"]) from None
            try:
                check_type(item, args[1])
            except FieldTypeError as e:
                raise e.within(f"[{key!r}]") from None


_HINTS = {}


def _hints(cls):
    """The annotated fields of ``cls`` to check (resolved once); {} for a class without annotations."""
    if cls not in _HINTS:
        if is_dataclass(cls):
            hints = typing.get_type_hints(cls)
            _HINTS[cls] = {f.name: hints[f.name] for f in fields(cls)}
        else:
            _HINTS[cls] = {k: v for k, v in typing.get_type_hints(cls).items()
                           if typing.get_origin(v) is not typing.ClassVar}
    return _HINTS[cls]


class _Decoder:
    def __init__(self, classes, arrays):
        self.classes = {_name(c): c for c in classes}
        self.arrays, self.memo = arrays, {}

    def _cls(self, name, kind):
        cls = self.classes.get(name)
        if cls is None or issubclass(cls, enum.Enum) != (kind == "enum"):
            raise ValueError(f"{name!r} is not a class this file may hold")
        return cls

    def _keep(self, node, obj):
        if "$id" in node:
            if not isinstance(node["$id"], int) or node["$id"] in self.memo:
                raise ValueError(f"bad object id {node['$id']!r}")
            self.memo[node["$id"]] = obj
        return obj

    def __call__(self, node):
        if node is None or isinstance(node, (bool, str, int, float)):
            return node
        if isinstance(node, list):
            return self._items(node, [])
        if not isinstance(node, dict) or len(node) < 1:
            raise ValueError(f"unexpected node {str(node)[:60]}")
        if "$ref" in node:
            return self.memo[node["$ref"]]
        if "$tuple" in node:
            return tuple(self(v) for v in node["$tuple"])
        if "$float" in node:
            if node["$float"] not in ("inf", "-inf", "nan"):
                raise ValueError(f"bad float {node['$float']!r}")
            return float(node["$float"])
        if "$fraction" in node:
            n, d = node["$fraction"]
            if type(n) is not int or type(d) is not int:
                raise ValueError("a fraction of non-integers")
            return Fraction(n, d)
        if "$scalar" in node:
            if not isinstance(node["$scalar"], str) or not _SCALAR.fullmatch(node["$scalar"]):
                raise ValueError(f"bad scalar type {node['$scalar']!r}")
            return np.dtype(node["$scalar"]).type(node["value"])
        if "$enum" in node:
            return self._cls(node["$enum"], "enum")[node["name"]]
        if "$array" in node:
            return self._keep(node, self.arrays[node["$array"]])
        if "$list" in node:
            return self._items(node["$list"], self._keep(node, []))
        if "$dict" in node:
            out = self._keep(node, {})
            for key, value in node["$dict"]:
                key = self(key)
                try:
                    out[key] = self(value)
                except FieldTypeError as e:
                    raise e.within(f"[{key!r}]") from None
            return out
        if "$obj" in node:
            cls = self._cls(node["$obj"], "obj")
            obj = self._keep(node, cls.__new__(cls))
            state = node["state"]
            hints = _hints(cls)
            if not isinstance(state, dict) or (is_dataclass(cls) or hints) and set(state) != set(hints):
                raise ValueError(f"{node['$obj']}: its fields are not the class's (written by another version of "
                                 f"OpenRDU: compile it again)")
            for k, v in state.items():
                try:
                    obj.__dict__[k] = self(v)
                    if k in hints:
                        check_type(obj.__dict__[k], hints[k])
                except FieldTypeError as e:
                    raise e.within(f".{k}") from None
            return obj
        raise ValueError(f"unexpected node with keys {sorted(node)[:4]}")

    def _items(self, nodes, out):
        for i, v in enumerate(nodes):
            try:
                out.append(self(v))
            except FieldTypeError as e:
                raise e.within(f"[{i}]") from None
        return out


def _read_array(data):
    """An ``arrays/N.npy`` member: numbers only, and no larger than the bytes that hold it.

    ``read_array`` refuses object arrays unless told otherwise, but allocates the shape its header
    claims before reading: a crafted header would ask for terabytes (MemoryError, not a refusal).
    """
    f = io.BytesIO(data)
    version = np.lib.format.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f".npy format version {version}")
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(f)
    if dtype.hasobject or math.prod(shape) * dtype.itemsize > len(data) - f.tell():
        raise ValueError(f"an array member's header ({dtype}, shape {shape}) does not match its {len(data)} bytes")
    f.seek(0)
    return np.lib.format.read_array(f)


def dumps(obj, *, format, version, classes):
    """The file bytes holding ``obj``; TypeError when it holds a type outside ``classes`` and the basics."""
    encode = _Encoder(classes)
    encode.count(obj)
    tree = json.dumps({"root": encode(obj)}, allow_nan=False, separators=(",", ":")).encode()
    # Arrays (the memory image: gigabytes for a large model) are streamed in chunks, hashed on a first pass
    # and written on a second, never held as whole .npy copies.
    arrays = {f"arrays/{i}.npy": np.ascontiguousarray(array) for i, array in enumerate(encode.arrays)}
    payload = {OBJECTS: {"sha256": hashlib.sha256(tree).hexdigest(), "bytes": len(tree)}}
    for name, array in arrays.items():
        sink = _Sink()
        np.lib.format.write_array(sink, array)
        payload[name] = {"sha256": sink.digest.hexdigest(), "bytes": sink.size}
    manifest = {"format": format, "version": version, "payload": payload}
    out = io.BytesIO()
    trailer_length = len(format) + len(" sha256=") + 64

    def entry(name):
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16            # -rw-r--r-- when unzipped
        return info
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr(entry(MANIFEST), json.dumps(manifest, indent=1).encode())
        z.writestr(entry(OBJECTS), tree)
        for name, array in arrays.items():
            info = entry(name)
            info.file_size = payload[name]["bytes"]
            with z.open(info, "w") as member:
                np.lib.format.write_array(member, array)
        z.comment = b"0" * trailer_length
    end = out.seek(0, io.SEEK_END) - trailer_length
    with out.getbuffer() as view:
        digest = hashlib.sha256(view[:end]).hexdigest()
    out.seek(end)
    out.truncate()
    out.write(f"{format} sha256={digest}".encode())
    return out.getvalue()


class _Sink:
    """A write-only file that keeps the SHA-256 and the length of what is written to it."""

    def __init__(self):
        self.digest, self.size = hashlib.sha256(), 0

    def write(self, data):
        self.digest.update(data)
        self.size += len(data)
        return len(data)


def loads(data, *, format, version, classes, where):
    """The object in file bytes ``data``; ProgramFormatError naming ``where`` and the problem."""
    def refuse(problem):
        return ProgramFormatError(f"{where}: {problem}")

    size = len(format) + len(" sha256=") + 64
    trailer = _TRAILER.fullmatch(data[-size:]) if len(data) > size else None
    if trailer is None or trailer.group(1) != format.encode():
        raise refuse(f"not an OpenRDU program file, or truncated (it does not end with a {format} checksum)")
    if hashlib.sha256(data[:-size]).hexdigest() != trailer.group(2).decode():
        raise refuse("checksum mismatch: the file is corrupt or was changed after it was written")
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
        if z.comment != trailer.group(0):
            raise zipfile.BadZipFile("the checksum is not the archive comment")
        manifest = json.loads(z.read(MANIFEST))
        found = manifest.get("format"), manifest.get("version")
    except (zipfile.BadZipFile, KeyError, ValueError, AttributeError, OSError) as e:
        raise refuse(f"not a readable {format} archive ({e})") from None
    if found[0] != format:
        raise refuse(f"format {found[0]!r}, not {format!r}")
    if found[1] != version:
        raise refuse(f"format version {found[1]!r}; this OpenRDU reads version {version} (compile it again)")
    try:
        payload = manifest["payload"]
        names = [info.filename for info in z.infolist()]
        if sorted(names) != sorted([MANIFEST, *payload]):
            raise ValueError(f"members {names} do not match the manifest")
        members = {}
        for name, entry in payload.items():
            if z.getinfo(name).compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{name} is compressed")
            members[name] = z.read(name)
            if hashlib.sha256(members[name]).hexdigest() != entry["sha256"]:
                raise ValueError(f"{name}: SHA-256 differs from the manifest")
        arrays = [_read_array(members[f"arrays/{i}.npy"]) for i in range(len(payload) - 1)]
        root = json.loads(members[OBJECTS])["root"]
        try:
            return _Decoder(classes, arrays)(root)
        except FieldTypeError as e:
            top = root["$obj"].rpartition(".")[2] if isinstance(root, dict) and isinstance(root.get("$obj"), str) \
                else "root"
            raise refuse(f"{top}{''.join(e.path)}: {e.problem}") from None
    except ProgramFormatError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, IndexError, AttributeError, ArithmeticError,
            RecursionError, OSError) as e:
        raise refuse(f"malformed {format} contents ({type(e).__name__}: {e})") from None
