"""Read a Hugging Face Llama-architecture checkpoint folder and check that we can compile it.

Everything the compiler does not implement stops here with an error that
names the file and the setting, rather than compiling to something that
computes a different function.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint folder that is missing, unreadable or inconsistent."""


class UnsupportedModelError(ValueError):
    """A well-formed checkpoint of an architecture, op or setting the compiler does not implement."""


@dataclass(frozen=True)
class LlamaShape:
    """The numbers that define a Llama decoder, taken from config.json."""

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

    @property
    def kv_group(self):
        """Query heads per key/value head."""
        return self.num_heads // self.num_kv_heads

    def layer_params(self):
        d, f, hd = self.hidden_size, self.intermediate_size, self.head_dim
        return 2 * d + d * self.num_heads * hd * 2 + 2 * d * self.num_kv_heads * hd + 3 * d * f

    def params(self):
        embed = self.vocab_size * self.hidden_size
        return embed * (1 if self.tie_word_embeddings else 2) + self.num_layers * self.layer_params() + self.hidden_size


@dataclass
class Checkpoint:
    """A checked checkpoint: its shape, its weights as float32 arrays, and where it came from.

    ``weights`` uses transformers' names (``model.layers.0.self_attn.q_proj.weight``);
    ``weight_dtypes`` records each tensor's stored dtype (``bfloat16``, ``float32``...).
    """

    path: Path
    shape: LlamaShape
    weights: dict
    weight_dtypes: dict

    @property
    def has_tokenizer(self):
        return (self.path / "tokenizer.json").is_file() or (self.path / "tokenizer.model").is_file()


_SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)


def _require(config, key, where):
    if key not in config:
        raise CheckpointError(f"{where}: missing {key!r}")
    return config[key]


def _unsupported(where, key, value, allowed):
    raise UnsupportedModelError(f"{where}: {key} = {value!r} is not supported (supported: {allowed})")


def read_shape(config, where="config.json"):
    """A :class:`LlamaShape` from a config dict, refusing what the compiler cannot build."""
    model_type = config.get("model_type")
    if model_type != "llama":
        _unsupported(where, "model_type", model_type, "'llama'")
    architectures = config.get("architectures") or ["LlamaForCausalLM"]
    for arch in architectures:
        if arch not in _SUPPORTED_ARCHITECTURES:
            _unsupported(where, "architectures", arch, ", ".join(_SUPPORTED_ARCHITECTURES))
    if config.get("hidden_act", "silu") != "silu":
        _unsupported(where, "hidden_act", config["hidden_act"], "'silu' (SwiGLU)")
    for flag in ("attention_bias", "mlp_bias"):
        if config.get(flag, False):
            _unsupported(where, flag, config[flag], "false")
    if config.get("pretraining_tp", 1) != 1:
        _unsupported(where, "pretraining_tp", config["pretraining_tp"], "1")
    rope = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling")
    rope_type = rope.get("rope_type", (scaling or {}).get("rope_type", (scaling or {}).get("type", "default")))
    if rope_type != "default":
        _unsupported(where, "rope type", rope_type, "'default'")
    rope_theta = float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))

    ints = {}
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "max_position_embeddings"):
        value = _require(config, key, where)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise CheckpointError(f"{where}: {key} must be a positive integer, not {value!r}")
        ints[key] = value
    heads = ints["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    if not isinstance(kv_heads, int) or kv_heads <= 0 or heads % kv_heads:
        raise CheckpointError(f"{where}: num_key_value_heads = {kv_heads!r} must divide num_attention_heads = {heads}")
    head_dim = config.get("head_dim") or ints["hidden_size"] // heads
    if head_dim * heads != ints["hidden_size"]:
        _unsupported(where, "head_dim", head_dim, f"hidden_size / num_attention_heads = {ints['hidden_size'] // heads}")
    if head_dim % 2:
        raise CheckpointError(f"{where}: head_dim = {head_dim} must be even for rotary embeddings")
    eos = config.get("eos_token_id")
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    return LlamaShape(
        vocab_size=ints["vocab_size"], hidden_size=ints["hidden_size"], intermediate_size=ints["intermediate_size"],
        num_layers=ints["num_hidden_layers"], num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
        max_positions=ints["max_position_embeddings"], rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        rope_theta=rope_theta, tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        bos_token_id=config.get("bos_token_id"), eos_token_id=eos,
    )


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
    return names


def _load_tensors(path):
    """All tensors of the folder's safetensors files, as (float32 array, stored dtype name)."""
    from safetensors import SafetensorError, safe_open

    files = sorted(path.glob("*.safetensors"))
    if not files:
        if any(path.glob("*.bin")) or any(path.glob("*.pt")):
            raise UnsupportedModelError(f"{path}: only safetensors weights are read, not PyTorch pickles "
                                        f"(save with safe_serialization=True)")
        raise CheckpointError(f"{path}: no *.safetensors weight file")
    tensors = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():
                    tensor = handle.get_tensor(name)
                    tensors[name] = (tensor.float().numpy(), str(tensor.dtype).removeprefix("torch."))
        except (SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{file}: cannot read the weights ({error})") from None
    return tensors


def load_checkpoint(path):
    """Read and check ``path``; raises :class:`CheckpointError` or :class:`UnsupportedModelError`."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: no config.json")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{config_file}: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_file}: expected a JSON object")
    shape = read_shape(config, str(config_file))
    tensors = _load_tensors(path)
    tensors.pop("lm_head.weight", None) if shape.tie_word_embeddings else None
    weights, dtypes = {}, {}
    for name, want in expected_weights(shape).items():
        if name not in tensors:
            raise CheckpointError(f"{path}: weight {name!r} is missing")
        array, dtype = tensors.pop(name)
        if array.shape != want:
            raise CheckpointError(f"{path}: weight {name!r} has shape {array.shape}, config.json implies {want}")
        if not np.isfinite(array).all():
            raise CheckpointError(f"{path}: weight {name!r} holds NaN or infinity")
        weights[name], dtypes[name] = array, dtype
    extra = sorted(n for n in tensors if not n.endswith("rotary_emb.inv_freq"))
    if extra:
        raise UnsupportedModelError(f"{path}: weights the Llama architecture does not use: {', '.join(extra[:5])}"
                                    + (" ..." if len(extra) > 5 else ""))
    return Checkpoint(path, shape, weights, dtypes)
