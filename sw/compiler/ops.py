"""Chip ops and the activation tensors they exchange: the compiler's IR below the graph.

A chip op is one instance of a dataflow template (:mod:`sw.compiler.templates`)
over PCUs and PMUs; ops exchange activation tensors, streams of
``lanes``-word vectors that flow over the fabric inside a kernel and through
an HBM scratch region between kernels.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Home:
    """Where an activation tensor lives in memory when it is not only on chip (e.g. the embedding row).

    ``token_stride`` / ``pos_stride``: bytes the row moves per token id / position; ``bf16``: stored as bf16.
    """

    region: str
    token_stride: int = 0
    pos_stride: int = 0
    bf16: bool = False


@dataclass(frozen=True)
class ChipTensor:
    """An activation tensor of ``words`` fp32 values; ``scratch`` is its HBM region between kernels."""

    name: str
    words: int
    home: Home | None = None

    @property
    def scratch(self):
        return f"act.{self.name}"


@dataclass(frozen=True)
class ChipOp:
    """One template instance: ``kind``, activation ``inputs`` / ``outputs`` (tensor names), its settings.

    ``reads_home`` / ``writes_home``: HBM regions (the KV caches, the logits) the op reads and writes
    directly rather than through activation tensors.
    """

    name: str
    kind: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, object] = field(default_factory=dict)
    reads_home: tuple[str, ...] = ()
    writes_home: tuple[str, ...] = ()

    def __str__(self):
        attrs = "".join(f" {k}={v}" for k, v in self.attrs.items())
        return f"{self.name}: {', '.join(self.outputs) or '-'} = {self.kind}({', '.join(self.inputs)}){attrs}"
