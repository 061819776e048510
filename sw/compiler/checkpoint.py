"""Read a Hugging Face Llama-family checkpoint folder (llama, mistral, qwen2) and check that we can compile it.

Everything the compiler does not implement stops here with an error that
names the file and the setting, rather than compiling to something that
computes a different function. Everything in the folder is untrusted input:
config.json is checked field by field against :class:`ConfigSchema` before
anything is sized from it, every file is checked to be a regular file of a
bounded size before it is opened, weights are checked by name, shape and
dtype from the safetensors headers before any tensor is read, and what a
library raises on a malformed file becomes a :class:`CheckpointError` naming
the file.
"""

import errno
import json
import math
import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from sw.errors import CheckpointError, UnsupportedModelError  # noqa: F401  (re-exported)

# Bounds on what a config may claim, far above any target's memory, so that nothing sized from a config
# (the table of expected weight names, the parameter count) is large before the memory check refuses it.
MAX_VOCAB = 1 << 21
MAX_HIDDEN = 1 << 16
MAX_INTERMEDIATE = 1 << 18
MAX_LAYERS = 1024
MAX_HEADS = 1024
MAX_HEAD_DIM = 1024
MAX_POSITIONS = 1 << 24

# File size limits, bytes: JSON files are parsed whole; safetensors caps its own header at 100 MB.
MAX_JSON_BYTES = 16 << 20
MAX_TOKENIZER_BYTES = 64 << 20
SAFETENSORS_HEADER_BYTES = 100_000_000 + 8

_SAFETENSORS_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}
_CONVERTED_DTYPES = {"F64": "float64"}


def _count(high, low=1, what="an integer"):
    return Annotated[StrictInt, Field(ge=low, le=high, description=f"{what} from {low} to {high}")]


def _positive(low, high):
    return Annotated[float, Field(strict=True, allow_inf_nan=False, ge=low, le=high,
                                  description=f"a finite number from {low:g} to {high:g}")]


_TokenId = Annotated[StrictInt, Field(ge=0, le=MAX_VOCAB - 1)]
_RopeTheta = _positive(1.0, 1e12)


_Factor = _positive(1e-6, 1e6)


class RopeSchema(BaseModel):
    """``rope_parameters`` / ``rope_scaling``: the fields the compiler reads; others pass unchecked."""

    model_config = ConfigDict(strict=True, extra="allow")
    rope_type: StrictStr | None = Field(None, description="a string such as 'default'")
    type: StrictStr | None = Field(None, description="a string such as 'default'")
    rope_theta: _RopeTheta | None = Field(None, description="a finite number from 1 to 1e+12")
    factor: _Factor | None = Field(None, description="a finite number from 1e-06 to 1e+06")
    original_max_position_embeddings: _count(MAX_POSITIONS) | None = Field(
        None, description=f"an integer from 1 to {MAX_POSITIONS}")
    low_freq_factor: _Factor | None = Field(None, description="a finite number from 1e-06 to 1e+06")
    high_freq_factor: _Factor | None = Field(None, description="a finite number from 1e-06 to 1e+06")
    beta_fast: _Factor | None = Field(None, description="a finite number from 1e-06 to 1e+06")
    beta_slow: _Factor | None = Field(None, description="a finite number from 1e-06 to 1e+06")
    attention_factor: _Factor | None = Field(None, description="a finite number from 1e-06 to 1e+06")
    mscale: _positive(0.0, 1e6) | None = Field(None, description="a finite number from 0 to 1e+06")
    mscale_all_dim: _positive(0.0, 1e6) | None = Field(None, description="a finite number from 0 to 1e+06")
    truncate: StrictBool | None = Field(None, description="true or false")
    partial_rotary_factor: _positive(0.0, 1.0) | None = Field(None, description="a finite number from 0 to 1")


class ConfigSchema(BaseModel):
    """The fields of a Llama config.json the compiler reads, each with its type and range.

    Strict: an integer field takes a JSON integer (not ``32.0``, ``"32"`` or ``true``), a boolean field a
    JSON boolean (not ``"false"`` or ``0``), a number field a finite JSON number. Fields not listed are
    transformers' business and pass unchecked. Each field's ``description`` is what the error says was
    expected.
    """

    model_config = ConfigDict(strict=True, extra="allow")
    model_type: StrictStr | None = Field(None, description="a string ('llama', 'mistral' or 'qwen2')")
    architectures: list[StrictStr] | None = Field(None, description="a list of strings such as "
                                                                    "[\"LlamaForCausalLM\"]")
    hidden_act: StrictStr = Field("silu", description="a string ('silu')")
    attention_bias: StrictBool = Field(False, description="true or false")
    mlp_bias: StrictBool = Field(False, description="true or false")
    pretraining_tp: StrictInt = Field(1, description="an integer (1)")
    rope_parameters: RopeSchema | None = Field(None, description="an object with rope_type and rope_theta")
    rope_scaling: RopeSchema | None = Field(None, description="null or an object with rope_type")
    rope_theta: _RopeTheta = Field(10000.0, description="a finite number from 1 to 1e+12")
    vocab_size: _count(MAX_VOCAB)
    hidden_size: _count(MAX_HIDDEN)
    intermediate_size: _count(MAX_INTERMEDIATE)
    num_hidden_layers: _count(MAX_LAYERS)
    num_attention_heads: _count(MAX_HEADS)
    num_key_value_heads: _count(MAX_HEADS) | None = Field(
        None, description=f"null (as many as attention heads) or an integer from 1 to {MAX_HEADS}")
    head_dim: _count(MAX_HEAD_DIM, 2) | None = Field(
        None, description=f"null (hidden_size / num_attention_heads) or an even integer from 2 to {MAX_HEAD_DIM}")
    max_position_embeddings: _count(MAX_POSITIONS)
    rms_norm_eps: _positive(1e-30, 1.0) = Field(1e-6, description="a finite number from 1e-30 to 1")
    tie_word_embeddings: StrictBool = Field(False, description="true or false")
    sliding_window: _count(MAX_POSITIONS) | None = Field(
        None, description=f"null or an integer from 1 to {MAX_POSITIONS}")
    use_sliding_window: StrictBool = Field(False, description="true or false")
    max_window_layers: _count(MAX_LAYERS, 0) | None = Field(
        None, description=f"null or an integer from 0 to {MAX_LAYERS}")
    layer_types: list[StrictStr] | None = Field(
        None, description="null or a list of 'full_attention' / 'sliding_attention', one per layer")
    bos_token_id: _TokenId | None = Field(None, description="null or a token id (an integer >= 0)")
    eos_token_id: _TokenId | list[_TokenId] | None = Field(
        None, description="null, a token id (an integer >= 0) or a list of token ids")


def _field_description(loc):
    """What the schema expects at an error location: the innermost named field's description."""
    model, field = ConfigSchema, None
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            break
        field = model.model_fields[part]
        model = RopeSchema if part in ("rope_parameters", "rope_scaling") else None
    return field


def _short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _one_line(error, limit=200):
    """A library's message as one line of at most ``limit`` characters."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def validate_config(config, where="config.json"):
    """``config`` (a dict from config.json) checked against :class:`ConfigSchema`.

    Raises
    ------
    CheckpointError
        For the first bad field: its name, its value and what was expected, in one line.
    """
    try:
        return ConfigSchema.model_validate(config)
    except ValidationError as error:
        first = error.errors()[0]
        loc = [p for p in first["loc"] if isinstance(p, str) and (p in ConfigSchema.model_fields
                                                                   or p in RopeSchema.model_fields)]
        if first["type"] == "missing":
            raise CheckpointError(f"{where}: missing {loc[-1]!r}") from None
        value = config
        for part in loc:
            value = value.get(part) if isinstance(value, dict) else value
        field = _field_description(loc)
        expected = field.description if field is not None and field.description else first["msg"]
        raise CheckpointError(f"{where}: {'.'.join(loc) or 'config'} = {_short(value)}: expected {expected}") \
            from None


def _kind(mode):
    for test, name in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def _stat(path):
    """``os.stat(path)``, with errors as one CheckpointError line that names a symlink loop as such."""
    try:
        return os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise CheckpointError(f"{path}: a symlink loop (too many levels of symbolic links)") from None
        if error.errno == errno.ENOENT and os.path.islink(path):
            raise CheckpointError(f"{path}: a symlink to {os.readlink(path)!r}, which does not exist") from None
        if error.errno == errno.ENOENT:
            raise CheckpointError(f"{path}: no such file") from None
        raise CheckpointError(f"{path}: {error.strerror}") from None


def check_file(path, limit, what):
    """The size of ``path``, after checking without opening it that it is a regular file of at most ``limit`` bytes.

    Raises
    ------
    CheckpointError
        ``path`` is missing, a symlink loop, a directory, FIFO, device or socket, or larger than ``limit``.
    """
    info = _stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise CheckpointError(f"{path}: a {_kind(info.st_mode)}, not a regular file ({what})")
    if info.st_size > limit:
        raise CheckpointError(f"{path}: {info.st_size:,} bytes, more than a {what} may have ({limit:,})")
    return info.st_size


def read_bytes(path, limit, what):
    """The bytes of the regular file ``path`` (at most ``limit``), read without blocking on a FIFO swapped in."""
    check_file(path, limit, what)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as error:
        raise CheckpointError(f"{path}: cannot open the {what} ({error.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CheckpointError(f"{path}: not a regular file ({what})")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise CheckpointError(f"{path}: more than a {what} may have ({limit:,} bytes)")
    return data


def _no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"key {_short(key)} appears twice in one object")
        seen[key] = value
    return seen


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON value")


def read_json(path, limit=MAX_JSON_BYTES, what="JSON file"):
    """The JSON value in ``path``: a regular UTF-8 file of at most ``limit`` bytes, no repeated keys, no NaN."""
    data = read_bytes(path, limit, what)
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except UnicodeDecodeError as error:
        raise CheckpointError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: not valid JSON (nested too deeply)") from None
    except ValueError as error:                 # JSONDecodeError, a repeated key, an integer of 4,300+ digits
        raise CheckpointError(f"{path}: not valid JSON ({_one_line(error)})") from None


def check_folder(path):
    """``path`` as a :class:`Path` after checking that it is a directory (CheckpointError otherwise)."""
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise CheckpointError(f"{path}: a symlink loop (too many levels of symbolic links)") from None
        raise CheckpointError(f"{path}: no such checkpoint folder") from None
    if not stat.S_ISDIR(info.st_mode):
        raise CheckpointError(f"{path}: no such checkpoint folder (a {_kind(info.st_mode)} is there)")
    return path


ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn")


@dataclass(frozen=True)
class Rope:
    """Rotary embeddings as config.json sets them, resolved the way transformers resolves them.

    ``rope_type`` is one of :data:`ROPE_TYPES`; ``factor`` scales positions (linear, dynamic, llama3,
    yarn); ``original_max_positions`` is the pre-training length (llama3, yarn); ``max_positions`` is
    ``max_position_embeddings`` (where dynamic NTK starts stretching its base); ``attention_factor``
    multiplies cos and sin (yarn's mscale, already computed; 1 otherwise). :mod:`sw.model.rope` turns
    it into tables.
    """

    rope_type: str = "default"
    theta: float = 10000.0
    factor: float = 1.0
    original_max_positions: int = 0
    max_positions: int = 0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    truncate: bool = True
    attention_factor: float = 1.0

    def __str__(self):
        if self.rope_type == "default":
            return f"default(theta={self.theta:g})"
        extra = {"linear": "", "dynamic": f", from {self.max_positions}",
                 "llama3": f", original {self.original_max_positions}, low {self.low_freq_factor:g}, "
                           f"high {self.high_freq_factor:g}",
                 "yarn": f", original {self.original_max_positions}, beta {self.beta_fast:g}/{self.beta_slow:g}, "
                         f"attention factor {self.attention_factor:.6g}"}[self.rope_type]
        return f"{self.rope_type}(theta={self.theta:g}, factor {self.factor:g}{extra})"


@dataclass(frozen=True)
class LlamaShape:
    """The numbers that define a Llama-family decoder, taken from config.json.

    ``biases``: the projections with a bias vector (``self_attn.q_proj``, ... ``mlp.down_proj``), as the
    model type and ``attention_bias`` / ``mlp_bias`` set them; ``windows``: per layer, the sliding
    attention window in positions (a query at p sees keys p - window + 1 .. p), 0 for full attention;
    empty when no layer slides.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_positions: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    rope: Rope = Rope()
    model_type: str = "llama"
    biases: tuple[str, ...] = ()
    windows: tuple[int, ...] = ()

    def variant(self):
        """What sets this decoder apart from a plain Llama, for summaries ('' for none)."""
        parts = [f"biases on {', '.join(p.split('.')[1].removesuffix('_proj') for p in self.biases)}"] \
            if self.biases else []
        for window in sorted(set(self.windows) - {0}):
            layers = [i for i, w in enumerate(self.windows) if w == window]
            parts.append(f"sliding window of {window} positions in layer{'s' if len(layers) > 1 else ''} "
                         f"{', '.join(map(str, layers))}")
        return f"{self.model_type}: {'; '.join(parts)}" if parts or self.model_type != "llama" else ""

    def window(self, layer):
        """Layer ``layer``'s sliding window in positions, 0 for full attention."""
        return self.windows[layer] if self.windows else 0

    @property
    def context_limit(self):
        """The most positions a compiled context may hold: ``max_position_embeddings``, or for dynamic NTK
        RoPE (which stretches its base past it, as transformers does) ``factor`` times that."""
        if self.rope.rope_type == "dynamic":
            return max(self.max_positions, int(self.rope.factor * self.max_positions))
        return self.max_positions

    @property
    def kv_group(self):
        """Query heads per key/value head."""
        return self.num_heads // self.num_kv_heads

    def layer_params(self):
        d, f, hd = self.hidden_size, self.intermediate_size, self.head_dim
        return (2 * d + d * self.num_heads * hd * 2 + 2 * d * self.num_kv_heads * hd + 3 * d * f
                + sum(self.bias_size(part) for part in self.biases))

    def bias_size(self, part):
        """The length of projection ``part``'s output (and of its bias): ``self_attn.k_proj`` -> kv heads x head_dim."""
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return {"self_attn.q_proj": q, "self_attn.k_proj": kv, "self_attn.v_proj": kv,
                "self_attn.o_proj": self.hidden_size, "mlp.gate_proj": self.intermediate_size,
                "mlp.up_proj": self.intermediate_size, "mlp.down_proj": self.hidden_size}[part]

    def params(self):
        embed = self.vocab_size * self.hidden_size
        return embed * (1 if self.tie_word_embeddings else 2) + self.num_layers * self.layer_params() + self.hidden_size


@dataclass
class Checkpoint:
    """A checked checkpoint: its shape, its weights as float32 arrays, and where it came from.

    ``weights`` maps transformers' names (``model.layers.0.self_attn.q_proj.weight``) to float32
    arrays: from :func:`load_checkpoint` a :class:`Weights`, which reads each tensor from its file
    when asked (any mapping will do for a checkpoint built in memory); ``weight_dtypes`` records each
    tensor's stored dtype (``bfloat16``, ``float16``, ``float32``, ``float64``).
    """

    path: Path
    shape: LlamaShape
    weights: dict
    weight_dtypes: dict

    @property
    def has_tokenizer(self):
        return (self.path / "tokenizer.json").is_file() or (self.path / "tokenizer.model").is_file()


# model_type -> its transformers class; the family differs only in biases and sliding windows.
MODEL_TYPES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
ATTENTION = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
MLP = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def _unsupported(where, key, value, allowed):
    raise UnsupportedModelError(f"{where}: {key} = {_short(value)} is not supported (supported: {allowed})")


def read_shape(config, where="config.json"):
    """A :class:`LlamaShape` from a config dict, refusing what the compiler cannot build.

    Raises
    ------
    CheckpointError
        A field of the wrong type or out of range (:class:`ConfigSchema`), or fields that disagree.
    UnsupportedModelError
        A well-formed setting the compiler does not implement.
    """
    if not isinstance(config, dict):
        raise CheckpointError(f"{where}: expected a JSON object")
    supported = ", ".join(map(repr, MODEL_TYPES))
    if isinstance(config.get("model_type"), str) and config["model_type"] not in MODEL_TYPES:
        _unsupported(where, "model_type", config["model_type"], supported)
    c = validate_config(config, where)
    if c.model_type not in MODEL_TYPES:
        _unsupported(where, "model_type", c.model_type, supported)
    for arch in c.architectures or [MODEL_TYPES[c.model_type]]:
        if arch != MODEL_TYPES[c.model_type]:
            _unsupported(where, "architectures", arch, f"{MODEL_TYPES[c.model_type]!r} for model_type "
                                                       f"{c.model_type!r}")
    if c.hidden_act != "silu":
        _unsupported(where, "hidden_act", c.hidden_act, "'silu' (SwiGLU)")
    if c.pretraining_tp != 1:
        _unsupported(where, "pretraining_tp", c.pretraining_tp, "1")
    rope = read_rope(config, c, where)

    heads, hidden = c.num_attention_heads, c.hidden_size
    kv_heads = heads if c.num_key_value_heads is None else c.num_key_value_heads
    if heads % kv_heads:
        raise CheckpointError(f"{where}: num_key_value_heads = {kv_heads!r} must divide num_attention_heads = {heads}")
    head_dim = hidden // heads if c.head_dim is None else c.head_dim
    if head_dim < 2:
        raise CheckpointError(f"{where}: head_dim = hidden_size / num_attention_heads = {hidden} / {heads} is "
                              f"below 2; give head_dim")
    if head_dim % 2:
        raise CheckpointError(f"{where}: head_dim = {head_dim} must be even for rotary embeddings")
    eos_ids = c.eos_token_id if isinstance(c.eos_token_id, list) else [c.eos_token_id]
    for key, token in [("bos_token_id", c.bos_token_id)] + [("eos_token_id", t) for t in eos_ids]:
        if token is not None and token >= c.vocab_size:
            raise CheckpointError(f"{where}: {key} = {token} is outside the vocabulary (vocab_size = {c.vocab_size})")
    eos = eos_ids[0] if eos_ids else None           # the runtime stops at the first
    biases, windows = _family(config, c, where)
    return LlamaShape(
        vocab_size=c.vocab_size, hidden_size=hidden, intermediate_size=c.intermediate_size,
        num_layers=c.num_hidden_layers, num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
        max_positions=c.max_position_embeddings, rms_norm_eps=c.rms_norm_eps, rope_theta=rope.theta,
        tie_word_embeddings=c.tie_word_embeddings, bos_token_id=c.bos_token_id, eos_token_id=eos, rope=rope,
        model_type=c.model_type, biases=biases, windows=windows,
    )


def _family(config, c, where):
    """(biases, windows) of a :class:`LlamaShape`, as transformers' class for ``model_type`` builds them.

    llama: ``attention_bias`` (q, k, v, o) and ``mlp_bias``, no window. mistral: no bias, every layer
    slides over ``sliding_window`` (4096 when absent, none when null). qwen2: q, k, v biases; with
    ``use_sliding_window``, the layers ``layer_types`` marks ``sliding_attention`` (by default those from
    ``max_window_layers`` (28) on) slide over ``sliding_window`` (4096 when absent).
    """
    layers = c.num_hidden_layers
    if c.model_type == "llama":
        return (ATTENTION if c.attention_bias else ()) + (MLP if c.mlp_bias else ()), ()
    window = c.sliding_window if "sliding_window" in config else 4096
    if c.model_type == "mistral":
        return (), (window,) * layers if window else ()
    window = window if c.use_sliding_window else None
    types = c.layer_types
    if types is None:
        start = 28 if c.max_window_layers is None else c.max_window_layers
        types = ["sliding_attention" if window and i >= start else "full_attention" for i in range(layers)]
    if len(types) != layers or not set(types) <= {"full_attention", "sliding_attention"}:
        raise CheckpointError(f"{where}: layer_types = {_short(types)}: expected {layers} entries (num_hidden_layers), "
                              f"each 'full_attention' or 'sliding_attention'")
    windows = tuple(window if t == "sliding_attention" and window else 0 for t in types)
    return ATTENTION[:3], windows if any(windows) else ()


def _yarn_mscale(scale, mscale=1.0):
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def read_rope(config, c, where="config.json"):
    """The :class:`Rope` of a config (``c``: its :class:`ConfigSchema`), resolved as transformers 5 does.

    transformers takes ``rope_scaling`` (the legacy name) when it is a non-empty object, else
    ``rope_parameters``; its ``rope_type`` (or legacy ``type``) defaults to ``default`` and its
    ``rope_theta`` to the top-level ``rope_theta``. Required fields missing, fields that make a formula
    divide by zero, a ``partial_rotary_factor`` below 1 (Llama rotates whole heads) and types other
    than :data:`ROPE_TYPES` are refused naming the field.
    """
    key = "rope_scaling" if config.get("rope_scaling") else "rope_parameters"
    p = (c.rope_scaling if key == "rope_scaling" else c.rope_parameters) or RopeSchema()
    type_key = f"{key}.rope_type" if p.rope_type is not None or p.type is None else f"{key}.type"
    rope_type = p.rope_type or p.type or "default"
    if rope_type not in ROPE_TYPES:
        _unsupported(where, type_key, rope_type, ", ".join(map(repr, ROPE_TYPES)))
    theta = p.rope_theta if p.rope_theta is not None else c.rope_theta
    if rope_type == "default":
        return Rope("default", theta)
    if p.partial_rotary_factor not in (None, 1.0):
        _unsupported(where, f"{key}.partial_rotary_factor", p.partial_rotary_factor, "1 (whole heads rotate)")

    def need(name):
        value = getattr(p, name)
        if value is None:
            raise CheckpointError(f"{where}: {key}.{name} is missing; rope type {rope_type!r} needs it")
        return value

    max_positions = c.max_position_embeddings
    original = p.original_max_position_embeddings or max_positions       # transformers' default
    if rope_type in ("linear", "dynamic"):
        return Rope(rope_type, theta, need("factor"), max_positions=max_positions)
    if rope_type == "llama3":
        low, high = need("low_freq_factor"), need("high_freq_factor")
        if high <= low:
            raise CheckpointError(f"{where}: {key}.high_freq_factor = {high!r} must exceed low_freq_factor = {low!r}")
        return Rope("llama3", theta, need("factor"), original, max_positions, low, high)
    factor = p.factor if p.factor is not None else max_positions / original
    attention = p.attention_factor
    if attention is None:
        attention = (_yarn_mscale(factor, p.mscale) / _yarn_mscale(factor, p.mscale_all_dim)
                     if p.mscale and p.mscale_all_dim else _yarn_mscale(factor))
    return Rope("yarn", theta, factor, original, max_positions, beta_fast=p.beta_fast or 32.0,
                # transformers reads truncate with .get(..., True): absent truncates, null does not.
                beta_slow=p.beta_slow or 1.0, truncate=bool(config[key].get("truncate", True)),
                attention_factor=float(attention))


def largest_memory():
    """(bytes, target name): the most HBM + DDR any target has, the bound on a checkpoint's weights."""
    from sw.target import TARGETS

    return max((t.memory.hbm.capacity + t.memory.ddr.capacity, t.name) for t in TARGETS.values())


def check_size(shape, where="config.json", memory=None):
    """Refuse a shape whose weights, at 2 bytes (bf16) each, exceed ``memory`` = (bytes, target name)."""
    capacity, name = memory or largest_memory()
    need = 2 * shape.params()
    if need > capacity:
        raise CheckpointError(f"{where}: {shape.params():,} parameters ({need:,} bytes at bf16) do not fit the "
                              f"memory of any target (the largest, {name}, has {capacity:,} bytes of HBM and DDR)")


def expected_weights(shape):
    """Tensor name -> shape for every weight the model needs."""
    d, f, v = shape.hidden_size, shape.intermediate_size, shape.vocab_size
    q, kv = shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
    names = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,)}
    if not shape.tie_word_embeddings:
        names["lm_head.weight"] = (v, d)
    for i in range(shape.num_layers):
        p = f"model.layers.{i}."
        names.update({
            p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,),
            p + "self_attn.q_proj.weight": (q, d), p + "self_attn.k_proj.weight": (kv, d),
            p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.o_proj.weight": (d, q),
            p + "mlp.gate_proj.weight": (f, d), p + "mlp.up_proj.weight": (f, d), p + "mlp.down_proj.weight": (d, f),
        })
        names.update({f"{p}{part}.bias": (shape.bias_size(part),) for part in shape.biases})
    return names


def _shard_name(index, name, tensor):
    if not isinstance(name, str) or not name.endswith(".safetensors") or Path(name).name != name:
        raise CheckpointError(f"{index}: weight_map[{_short(tensor)}] = {_short(name)} is not the name of a "
                              f"*.safetensors file in the folder")
    return name


def read_index(index):
    """The tensor name -> shard file name map of a safetensors index, checked field by field.

    Raises
    ------
    CheckpointError
        Not JSON, not an object, ``weight_map`` missing, not an object or empty, a shard name that is not a
        ``*.safetensors`` file in the folder, or ``metadata`` (optional) not an object whose ``total_size``
        (optional) is an integer >= 0; the message names the field.
    """
    data = read_json(index, what="safetensors index")
    if not isinstance(data, dict):
        raise CheckpointError(f"{index}: expected a JSON object with \"weight_map\" (tensor name -> shard file name)")
    if "weight_map" not in data:
        raise CheckpointError(f"{index}: missing \"weight_map\" (tensor name -> shard file name)")
    weight_map, metadata = data["weight_map"], data.get("metadata", {})
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index}: weight_map = {_short(weight_map)}: expected a non-empty object "
                              f"(tensor name -> shard file name)")
    if metadata is not None and not isinstance(metadata, dict):
        raise CheckpointError(f"{index}: metadata = {_short(metadata)}: expected an object")
    total = (metadata or {}).get("total_size", 0)
    if type(total) is not int or total < 0:
        raise CheckpointError(f"{index}: metadata.total_size = {_short(total)}: expected an integer >= 0 (bytes)")
    return {tensor: _shard_name(index, name, tensor) for tensor, name in weight_map.items()}


def weight_files(path):
    """The safetensors files to read and, for a sharded checkpoint, its index's tensor name -> file name.

    With ``model.safetensors.index.json`` the shards it names (every one must be there; other
    ``*.safetensors`` files are not read), else every ``*.safetensors`` file in the folder.
    """
    index = path / "model.safetensors.index.json"
    if os.path.lexists(index):
        weight_map = read_index(index)
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            if not os.path.lexists(path / shard):
                raise CheckpointError(f"{index}: names the shard {shard!r}, which is not in {path}")
        return [path / shard for shard in shards], weight_map
    files = sorted(path.glob("*.safetensors"))
    if not files:
        if any(path.glob("*.bin")) or any(path.glob("*.pt")):
            raise UnsupportedModelError(f"{path}: only safetensors weights are read, not PyTorch .bin files "
                                        f"(save with safe_serialization=True)")
        raise CheckpointError(f"{path}: no *.safetensors weight file")
    return files, None


def _headers(files, weight_map, limit):
    """Tensor name -> (file, safetensors dtype, shape) from the files' headers, reading no tensor data."""
    from safetensors import SafetensorError, safe_open

    found = {}
    for file in files:
        check_file(file, limit, "weight file")
        try:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():
                    if name in found:
                        raise CheckpointError(f"weight {_short(name)} is defined twice: in {found[name][0]} and in "
                                              f"{file}")
                    if weight_map is not None and weight_map.get(name) != file.name:
                        raise CheckpointError(f"{file}: holds weight {_short(name)}, which the index places in "
                                              f"{_short(weight_map[name])}" if name in weight_map else
                                              f"{file}: holds weight {_short(name)}, which the index does not name")
                    info = handle.get_slice(name)
                    found[name] = (file, info.get_dtype(), tuple(info.get_shape()))
        except (SafetensorError, OSError, ValueError, RuntimeError) as error:
            if isinstance(error, CheckpointError):
                raise
            raise CheckpointError(f"{file}: cannot read the weights ({_one_line(error)})") from None
    for name, shard in (weight_map or {}).items():
        if name not in found:
            raise CheckpointError(f"{files[0].parent / 'model.safetensors.index.json'}: places weight "
                                  f"{_short(name)} in {shard}, which does not hold it")
    return found


def read_tensor(file, name):
    """Tensor ``name`` of the safetensors ``file`` as (float32 array, stored dtype name), nothing else read."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            tensor = handle.get_tensor(name)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{file}: cannot read the weights ({_one_line(error)})") from None
    return tensor.float().numpy(), str(tensor.dtype).removeprefix("torch.")


def bf16_exact(array, chunk=1 << 20):
    """Whether every value of the float32 ``array`` is a bf16 value (its pattern's low 16 bits are zero),
    tested ``chunk`` values at a time."""
    words = np.ascontiguousarray(array, np.float32).reshape(-1).view(np.uint32)
    return not any(np.any(words[i:i + chunk] & 0xFFFF) for i in range(0, words.size, chunk))


class Weights(Mapping):
    """Tensor name -> float32 array, made by ``read(name)`` each time it is asked for and never kept.

    A pass that takes one tensor at a time therefore holds one tensor at a time: no whole-model copy
    exists (``dict(weights)`` makes one for callers that want it). ``bf16`` holds the names whose every
    value is a bf16 value, found when the checkpoint was checked, so choosing how weights stream reads
    nothing again. :meth:`map` derives a mapping as lazy (padded, rounded weights).
    """

    def __init__(self, read, names, bf16=()):
        self._read, self._names, self.bf16 = read, dict.fromkeys(names), frozenset(bf16)

    def __getitem__(self, name):
        if name not in self._names:
            raise KeyError(name)
        return self._read(name)

    def __contains__(self, name):
        return name in self._names

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)

    def map(self, fn, bf16=None):
        """Weights whose ``name`` is ``fn(name, self[name])``; ``bf16`` as given, else this one's."""
        return Weights(lambda name: fn(name, self[name]), self._names, self.bf16 if bf16 is None else bf16)


def load_checkpoint(path, *, memory=None):
    """Read and check ``path``; raises :class:`CheckpointError` or :class:`UnsupportedModelError`.

    ``memory`` = (bytes, target name) bounds the weights (default: the largest target's HBM + DDR); it is
    checked from config.json before any weight is read.
    """
    path = check_folder(path)
    config_file = path / "config.json"
    if not os.path.lexists(config_file):
        raise CheckpointError(f"{path}: no config.json")
    config = read_json(config_file, what="config.json")
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_file}: expected a JSON object")
    shape = read_shape(config, str(config_file))
    check_size(shape, str(config_file), memory)
    expected = expected_weights(shape)
    elements = sum(math.prod(s) for s in expected.values()) + shape.vocab_size * shape.hidden_size
    files, weight_map = weight_files(path)
    found = _headers(files, weight_map, 8 * elements + SAFETENSORS_HEADER_BYTES)
    if shape.tie_word_embeddings:
        found.pop("lm_head.weight", None)
    converted = 0
    for name, want in expected.items():
        if name not in found:
            raise CheckpointError(f"{path}: weight {name!r} is missing")
        file, dtype, have = found[name]
        if have != want:
            raise CheckpointError(f"{path}: weight {name!r} has shape {have}, config.json implies {want}")
        if dtype in _CONVERTED_DTYPES:
            converted += 1
        elif dtype not in _SAFETENSORS_DTYPES:
            raise CheckpointError(f"{file}: weight {name!r} is stored as {dtype}; the compiler reads floating-point "
                                  f"weights only: BF16, F16 or F32 (F64 is converted)")
    extra = sorted(n for n in found if n not in expected and not n.endswith("rotary_emb.inv_freq"))
    if extra:
        raise UnsupportedModelError(f"{path}: weights the {MODEL_TYPES[shape.model_type].removesuffix('ForCausalLM')} "
                                    f"architecture does not use: "
                                    f"{', '.join(_short(n) for n in extra[:5])}" + (" ..." if len(extra) > 5 else ""))
    if converted:
        print(f"openrdu: note: {path}: {converted} float64 weights converted to float32", file=sys.stderr)
    if weight_map is not None:
        named = set(weight_map.values())
        ignored = sorted(f.name for f in path.glob("*.safetensors") if f.name not in named)
        if ignored:
            print(f"openrdu: warning: {path}: ignoring {len(ignored)} *.safetensors file"
                  f"{'s' if len(ignored) > 1 else ''} the index does not name: {', '.join(map(_short, ignored[:5]))}"
                  + (" ..." if len(ignored) > 5 else ""), file=sys.stderr)
    # One tensor at a time: checked finite and tested for bf16 values, then dropped (Weights reads it again).
    bf16 = set()
    for name in expected:
        array, dtype = read_tensor(found[name][0], name)
        if not np.isfinite(array).all():
            raise CheckpointError(f"{path}: weight {name!r} holds NaN or infinity"
                                  + (" (after conversion to float32)" if dtype == "float64" else ""))
        if dtype == "bfloat16" or bf16_exact(array):
            bf16.add(name)
        del array
    dtypes = {name: (_SAFETENSORS_DTYPES | _CONVERTED_DTYPES)[found[name][1]] for name in expected}
    weights = Weights(lambda name: read_tensor(found[name][0], name)[0], expected, bf16)
    return Checkpoint(path, shape, weights, dtypes)


def load_tokenizer(path):
    """The folder's tokenizer (transformers' ``PreTrainedTokenizerFast``), or None without a tokenizer.json.

    tokenizer.json and the tokenizer's JSON side files are checked as regular, bounded, valid JSON files
    first; what tokenizers or transformers then refuse is a CheckpointError naming the folder.
    """
    path = check_folder(path)
    file = path / "tokenizer.json"
    if not os.path.lexists(file):
        return None
    data = read_json(file, MAX_TOKENIZER_BYTES, "tokenizer file")
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise CheckpointError(f"{file}: not a tokenizer (expected a JSON object with a \"model\" object)")
    for side in ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"):
        if os.path.lexists(path / side) and not isinstance(read_json(path / side, what=side), dict):
            raise CheckpointError(f"{path / side}: expected a JSON object")
    from transformers import PreTrainedTokenizerFast

    try:
        return PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
    # tokenizers raises plain Exception for a file it cannot build; transformers a dozen kinds for bad settings.
    except Exception as error:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot load the tokenizer ({type(error).__name__}: {_one_line(error)})") \
            from None
