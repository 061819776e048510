"""A small dataflow-graph IR: tensors with shapes, dtypes and tiers, and ops between them.

A :class:`Graph` is a list of ops in execution order over named tensors.
``str(graph)`` prints it one op a line; :meth:`Graph.check` verifies that
every op's inputs exist before it and that shapes agree with what the op
kind computes (:data:`OP_KINDS`).
"""

from dataclasses import dataclass, field
from math import prod

from sw.errors import OpenRDUError

DTYPE_BYTES = {"bf16": 2, "fp32": 4, "int32": 4}
TIERS = ("host", "ddr", "hbm", "sram")
ROLES = ("weight", "activation", "kv_cache", "input", "output")


class GraphError(OpenRDUError, ValueError):
    """An ill-formed graph: names the op and what is wrong with it."""


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple
    dtype: str
    tier: str
    role: str

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(self.shape))
        if self.dtype not in DTYPE_BYTES:
            raise GraphError(f"tensor {self.name}: dtype {self.dtype!r} is not one of {sorted(DTYPE_BYTES)}")
        if self.tier not in TIERS:
            raise GraphError(f"tensor {self.name}: tier {self.tier!r} is not one of {TIERS}")
        if self.role not in ROLES:
            raise GraphError(f"tensor {self.name}: role {self.role!r} is not one of {ROLES}")

    @property
    def elements(self):
        return prod(self.shape)

    @property
    def bytes(self):
        return self.elements * DTYPE_BYTES[self.dtype]

    def __str__(self):
        return f"{self.name}:{self.dtype}[{','.join(map(str, self.shape))}]@{self.tier}"


@dataclass(frozen=True)
class Op:
    name: str
    kind: str
    inputs: tuple
    outputs: tuple
    attrs: dict = field(default_factory=dict)
    layer: int | None = None

    def __str__(self):
        attrs = "".join(f" {k}={v}" for k, v in self.attrs.items())
        return f"{self.name}: {', '.join(self.outputs)} = {self.kind}({', '.join(self.inputs)}){attrs}"


def _matvec(shapes, attrs):
    w, x, *bias = shapes
    if len(w) != 2 or x != (w[1],) or bias not in ([], [(w[0],)]):
        raise GraphError(f"matvec of weight {w} by vector {x}" + (f" plus bias {bias[0]}" if bias else ""))
    return [(w[0],)]


def _same(shapes, attrs):
    if len(set(shapes)) != 1:
        raise GraphError(f"operands of different shapes {shapes}")
    return [shapes[0]]


def _rmsnorm(shapes, attrs):
    x, w = shapes
    if w != x or len(x) != 1:
        raise GraphError(f"rmsnorm of {x} with weight {w}")
    return [x]


def _embed(shapes, attrs):
    table, token = shapes
    if token != (1,) or len(table) != 2:
        raise GraphError(f"embedding lookup in {table} by {token}")
    return [(table[1],)]


def _rope(shapes, attrs):
    x, pos = shapes
    if pos != (1,) or x[0] % (2 * attrs["heads"]):
        raise GraphError(f"rope of {x} at {pos} with {attrs['heads']} heads")
    return [x]


def _kv_write(shapes, attrs):
    cache, x, pos = shapes
    if len(cache) != 3 or x != (cache[0] * cache[2],) or pos != (1,):
        raise GraphError(f"cache {cache} written with {x} at {pos}")
    return [cache]


def _attention(shapes, attrs):
    q, k_cache, v_cache, pos = shapes
    kv_heads, _, head_dim = k_cache
    if k_cache != v_cache or q != (attrs["heads"] * head_dim,) or attrs["heads"] % kv_heads or pos != (1,) \
            or attrs.get("window", 1) < 1:
        raise GraphError(f"attention of {q} over caches {k_cache}, {v_cache} with {attrs['heads']} heads")
    return [q]


def _argmax(shapes, attrs):
    return [(1,)]


OP_KINDS = {
    "embed": _embed, "rmsnorm": _rmsnorm, "matvec": _matvec, "rope": _rope, "kv_write": _kv_write,
    "attention": _attention, "add": _same, "silu_mul": _same, "argmax": _argmax,
}


class Graph:
    """Tensors by name and ops in execution order."""

    def __init__(self, name):
        self.name = name
        self.tensors = {}
        self.ops = []

    def tensor(self, name, shape, dtype, tier, role):
        if name in self.tensors:
            raise GraphError(f"{self.name}: tensor {name!r} defined twice")
        self.tensors[name] = Tensor(name, shape, dtype, tier, role)
        return name

    def op(self, kind, inputs, outputs, *, name=None, layer=None, **attrs):
        if kind not in OP_KINDS:
            raise GraphError(f"{self.name}: unsupported op kind {kind!r} (supported: {sorted(OP_KINDS)})")
        op = Op(name or f"{kind}{len(self.ops)}", kind, tuple(inputs), tuple(outputs), attrs, layer)
        self.ops.append(op)
        return op

    def check(self):
        """Raise :class:`GraphError` naming the first op whose inputs or shapes are wrong."""
        defined = {n for n, t in self.tensors.items() if t.role in ("weight", "input", "kv_cache")}
        for op in self.ops:
            for name in op.inputs:
                if name not in self.tensors:
                    raise GraphError(f"{self.name}: op {op.name} reads unknown tensor {name!r}")
                if name not in defined:
                    raise GraphError(f"{self.name}: op {op.name} reads {name!r} before any op writes it")
            try:
                shapes = OP_KINDS[op.kind]([self.tensors[n].shape for n in op.inputs], op.attrs)
            except GraphError as error:
                raise GraphError(f"{self.name}: op {op.name} ({op.kind}): {error}") from None
            for name, shape in zip(op.outputs, shapes):
                if name not in self.tensors:
                    raise GraphError(f"{self.name}: op {op.name} writes unknown tensor {name!r}")
                if self.tensors[name].shape != tuple(shape):
                    raise GraphError(f"{self.name}: op {op.name} makes {tuple(shape)} but {name} is declared "
                                     f"{self.tensors[name].shape}")
                defined.add(name)
        return self

    def bytes_by_tier(self, role=None):
        out = {}
        for t in self.tensors.values():
            if role is None or t.role == role:
                out[t.tier] = out.get(t.tier, 0) + t.bytes
        return out

    def __str__(self):
        lines = [f"graph {self.name}: {len(self.ops)} ops, {len(self.tensors)} tensors"]
        for role in ("input", "weight", "kv_cache"):
            named = [t for t in self.tensors.values() if t.role == role]
            if named:
                lines.append(f"  {role}s: {len(named)}, {sum(t.bytes for t in named)} bytes")
        for op in self.ops:
            lines.append(f"  {op}")
        return "\n".join(lines)
